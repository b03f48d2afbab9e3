"""vd.units: the one byte-size formatter (decimal and binary) and the size/duration parsers."""

from __future__ import annotations

import pytest

from vd.units import format_age, format_size, parse_duration, parse_size


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1234, "1.2 kB"), (34_500_000, "34.5 MB"),
    (2_100_000_000, "2.1 GB"), (3.5e12, "3.5 TB"), (7e15, "7000.0 TB"), (523.7, "523 B"),
])
def test_decimal_sizes(n, text):
    assert format_size(n) == text


@pytest.mark.parametrize("n, text", [
    (512, "512 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (300 << 20, "300.0 MiB"),
    (int(22.2 * 2**30), "22.2 GiB"), (5 << 40, "5.0 TiB"),
])
def test_binary_sizes(n, text):
    assert format_size(n, binary=True) == text


def test_parse_and_format_agree():
    for text in ("20GB", "1.5kB", "999B", "12MB"):
        assert parse_size(format_size(parse_size(text))) == parse_size(text)
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_duration("2w") == 14 * 86400
    assert format_age(3 * 3600 + 5) == "3 hours ago"
    with pytest.raises(ValueError):
        parse_size("lots")
