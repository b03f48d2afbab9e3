"""Reading back every Gaussian format vd writes, from vd's own files and from files PlayCanvas splat-transform
writes (those tests skip without it; CI installs it through npm): `vd inspect` input and `vd export` sources."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess

import numpy as np
import pytest
from test_export_formats import random_splats, unit

SPLAT_TRANSFORM = shutil.which("splat-transform")
needs_splat_transform = pytest.mark.skipif(
    SPLAT_TRANSFORM is None, reason="splat-transform (npm @playcanvas/splat-transform) is not installed"
)


def splat_transform(*args):
    r = subprocess.run([SPLAT_TRANSFORM, "-q", "-w", *map(str, args)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr


def covariances(a) -> np.ndarray:
    from vd.geometry import quat_to_rotmat

    R = quat_to_rotmat(unit(a.quats))
    M = R * np.exp(a.log_scales.astype(np.float64))[:, None, :]
    return M @ np.swapaxes(M, 1, 2)


def same_splats(a, b, *, atol=1e-5):
    """Two SplatArrays hold the same splats in the same order. Orientations are compared as covariances: a
    quaternion and the same one turned 180 degrees about one of the splat's own axes give the same Gaussian
    (splat-transform's SPZ and vd's differ so)."""
    assert len(a) == len(b) and a.sh.shape == b.sh.shape
    for name in ("means", "log_scales", "opacity_logits", "sh"):
        assert np.allclose(getattr(a, name), getattr(b, name), atol=atol), (
            name,
            np.abs(getattr(a, name) - getattr(b, name)).max(),
        )
    ca, cb = covariances(a), covariances(b)
    scale = np.abs(ca).max((1, 2), keepdims=True)
    assert np.abs(ca - cb).max() <= 1e-4 * scale.max() and np.all(np.abs(ca - cb) <= 1e-3 * scale + 1e-12)


@pytest.fixture(scope="module")
def scene_ply(tmp_path_factory):
    """An SH-3 INRIA PLY of 600 random splats (vd's writer)."""
    from vd.export.ply import export_ply

    p = tmp_path_factory.mktemp("read") / "scene.ply"
    export_ply(random_splats(600, 3, seed=3).to_gaussians(), p)
    return p


def ply_arrays(path):
    from vd.export.transform import SplatArrays
    from vd.ply import read_ply

    return SplatArrays.from_gaussians(read_ply(path)[0])


# ----------------------------------------------------------------------------- SPZ version 4
def spz_v4_bytes(v3_gzipped: bytes) -> bytes:
    """The version 4 file holding what a version 3 stream holds: a 32-byte header, the stream table, one
    Zstandard frame per attribute (the layout splat-transform 2.7 writes, see vd.export.spz)."""
    import zstandard

    raw = gzip.decompress(v3_gzipped)
    magic, _, n, deg, frac, flags, _ = struct.unpack_from("<IIIBBBB", raw)
    k = (deg + 1) ** 2
    sizes = [9 * n, n, 3 * n, 3 * n, 4 * n] + ([3 * (k - 1) * n] if deg else [])
    body, off = [], 16
    for s in sizes:
        body.append(raw[off : off + s])
        off += s
    frames = [zstandard.ZstdCompressor().compress(b) for b in body]
    head = struct.pack("<IIIBBBBI12x", magic, 4, n, deg, frac, flags, len(frames), 32)
    table = b"".join(struct.pack("<QQ", len(f), len(b)) for f, b in zip(frames, body))
    return head + table + b"".join(frames)


def test_spz_version_4_is_read_like_the_version_3_it_was_made_from(tmp_path, run_vd):
    from vd.export.spz import encode_spz, read_spz

    a = random_splats(400, 2, seed=1)
    v3 = encode_spz(a, 3)
    (tmp_path / "v3.spz").write_bytes(v3)
    (tmp_path / "v4.spz").write_bytes(spz_v4_bytes(v3))
    b3, h3 = read_spz(tmp_path / "v3.spz")
    b4, h4 = read_spz(tmp_path / "v4.spz")
    assert (h4.version, h4.count, h4.sh_degree) == (4, 400, 2) and h3.version == 3
    same_splats(b3, b4, atol=0)
    r = run_vd("inspect", tmp_path / "v4.spz")
    assert r.code == 0 and "400 gaussians" in r.stdout and "spz v4" in r.stderr, r
    r = run_vd("export", tmp_path / "v4.spz", "--format", "ply", "-o", tmp_path / "back.ply", "--json")
    assert r.code == 0 and json.loads(r.stdout)["written"] == 400, r


def test_spz_version_4_damage_is_one_sentence(tmp_path, run_vd):
    from vd.export.spz import encode_spz

    data = spz_v4_bytes(encode_spz(random_splats(50, 0), 3))
    (tmp_path / "cut.spz").write_bytes(data[:-10])
    r = run_vd("inspect", tmp_path / "cut.spz")
    assert r.code == 1 and "truncated" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    bad = bytearray(data)
    bad[32 + 5 * 16 + 8] ^= 0xFF  # inside the first Zstandard frame
    (tmp_path / "bad.spz").write_bytes(bytes(bad))
    r = run_vd("inspect", tmp_path / "bad.spz")
    assert r.code == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r


def test_spz_version_1_float16_positions(tmp_path):
    """Version 1 (float16 positions, never released by Niantic, still read)."""
    from vd.export.spz import encode_spz, read_spz

    a = random_splats(30, 0, seed=2)
    raw = gzip.decompress(encode_spz(a, 2))
    n = 30
    ref, _ = read_spz_bytes(tmp_path, encode_spz(a, 2))
    pos16 = np.asarray(ref.means * np.array([1, -1, -1]), np.float16)  # the file is RUB
    v1 = struct.pack("<IIIBBBB", 0x5053474E, 1, n, 0, 12, 0, 0) + pos16.tobytes() + raw[16 + 9 * n :]
    (tmp_path / "v1.spz").write_bytes(gzip.compress(v1))
    b, h = read_spz(tmp_path / "v1.spz")
    assert h.version == 1
    assert (
        np.allclose(b.means, ref.means, atol=2e-3)
        and np.allclose(b.sh, ref.sh)
        and np.allclose(b.log_scales, ref.log_scales)
    )


def read_spz_bytes(tmp_path, data):
    from vd.export.spz import read_spz

    (tmp_path / "tmp.spz").write_bytes(data)
    return read_spz(tmp_path / "tmp.spz")


# ----------------------------------------------------------------------------- vd's own files, read back by vd
@pytest.mark.parametrize(
    "fmt,name,extra",
    [
        ("spz", "s2.spz", ["--spz-version", "2"]),
        ("spz", "s3.spz", []),
        ("splat", "s.splat", []),
        ("compressed-ply", "s.compressed.ply", []),
    ],
)
def test_vd_reads_back_what_it_writes(scene_ply, tmp_path, run_vd, fmt, name, extra):
    r = run_vd("export", scene_ply, "--format", fmt, "-o", tmp_path / name, *extra)
    assert r.code == 0, r
    r = run_vd("inspect", tmp_path / name)
    assert r.code == 0 and "600 gaussians" in r.stdout, r
    r = run_vd("export", tmp_path / name, "--format", "ply", "-o", tmp_path / "back.ply", "--json")
    assert r.code == 0 and json.loads(r.stdout)["written"] == 600, r


@needs_splat_transform
def test_vd_reads_its_own_sog(scene_ply, tmp_path, run_vd):
    from vd.export.read import read_gaussians

    r = run_vd("export", scene_ply, "--format", "sog", "-o", tmp_path / "s.sog")
    assert r.code == 0, r
    r = run_vd("inspect", tmp_path / "s.sog")
    assert r.code == 0 and "600 gaussians" in r.stdout and "sh_degree=3" in r.stdout and "sog" in r.stderr, r
    r = run_vd("export", tmp_path / "s.sog", "--format", "ply", "-o", tmp_path / "back.ply", "--json")
    assert r.code == 0 and json.loads(r.stdout)["written"] == 600, r
    # within SOG's quantisation of the original (16-bit log positions, codebooks of 256 entries)
    from vd.export.transform import SplatArrays

    a = ply_arrays(scene_ply)
    b = SplatArrays.from_gaussians(read_gaussians(tmp_path / "s.sog")[0])
    d = np.linalg.norm(a.means[:, None] - b.means[None], axis=-1)  # the file may reorder the splats
    match = d.argmin(1)
    assert d.min(1).max() < 2e-3 and len(set(match.tolist())) == 600
    assert np.abs(a.sh[:, 0] - b.sh[match, 0]).max() < 0.05


def test_sog_damage_is_one_sentence(tmp_path, run_vd):
    import zipfile

    (tmp_path / "junk.sog").write_bytes(b"not a zip")
    with zipfile.ZipFile(tmp_path / "empty.sog", "w") as z:
        z.writestr("other.txt", "x")
    with zipfile.ZipFile(tmp_path / "v1.sog", "w") as z:
        z.writestr("meta.json", json.dumps({"means": {"shape": [3, 3]}}))
    for name, word in (("junk", "not a zip"), ("empty", "no meta.json"), ("v1", "version 1")):
        r = run_vd("inspect", tmp_path / f"{name}.sog")
        assert r.code == 1 and word in r.stderr and len(r.stderr.strip().splitlines()) == 1, (name, r)


# ----------------------------------------------------------------------------- splat-transform's files, read by vd
@needs_splat_transform
@pytest.mark.parametrize(
    "name,extra",
    [
        ("t.compressed.ply", []),
        ("t.sog", ["--gpu", "cpu"]),
        ("t3.spz", ["--spz-version", "3"]),
        ("t4.spz", ["--spz-version", "4"]),
    ],
)
def test_files_written_by_splat_transform(scene_ply, tmp_path, run_vd, name, extra):
    """vd decodes each file to what splat-transform itself decodes it to (its PLY of the same file)."""
    from vd.export.read import read_gaussians
    from vd.export.transform import SplatArrays

    splat_transform(*extra, scene_ply, tmp_path / name)
    splat_transform(tmp_path / name, tmp_path / "decoded.ply")
    ours = SplatArrays.from_gaussians(read_gaussians(tmp_path / name)[0])
    theirs = ply_arrays(tmp_path / "decoded.ply")
    if name.endswith(".spz"):  # splat-transform decodes SPZ alphas with its own rounding of the logit
        assert np.allclose(
            1 / (1 + np.exp(-ours.opacity_logits)), 1 / (1 + np.exp(-theirs.opacity_logits)), atol=1 / 255
        )
        theirs.opacity_logits = ours.opacity_logits
    same_splats(ours, theirs, atol=2e-4)
    r = run_vd("inspect", tmp_path / name)
    assert r.code == 0 and "600 gaussians" in r.stdout, r
    r = run_vd("export", tmp_path / name, "--format", "spz", "-o", tmp_path / "again.spz", "--json")
    assert r.code == 0 and json.loads(r.stdout)["written"] == 600, r
