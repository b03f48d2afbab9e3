"""PLY writer/reader: INRIA layout, round trips, other tools' layouts, malformed files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vd.errors import InputError
from vd.gaussians import C0, Gaussians
from vd.ply import MIN_OPACITY, inria_property_names, read_ply, write_ply

INRIA_DEG3 = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    + [f"f_rest_{i}" for i in range(45)]
    + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
)


def rand_gaussians(n=200, deg=3, seed=0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return Gaussians(r(n, 3), r(n, 3) - 3, r(n, 4), r(n) + 2.0, r(n, (deg + 1) ** 2, 3))


def test_inria_property_list_exact():
    assert inria_property_names(3) == INRIA_DEG3
    assert len(INRIA_DEG3) == 62
    assert inria_property_names(0)[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert len(inria_property_names(1)) == 62 - 45 + 9


@pytest.mark.parametrize("deg", [0, 1, 2, 3])
def test_round_trip_bit_exact(tmp_path, deg):
    g = rand_gaussians(deg=deg)
    p = tmp_path / "a.ply"
    rep = write_ply(p, g, comments={"source_image": "abc123", "intrinsics": [[500.0, 0, 256], [0, 500.0, 192], [0, 0, 1]]})
    assert rep.written == len(g) and rep.dropped_nonfinite == 0 and rep.dropped_transparent == 0
    g2, meta = read_ply(p)
    for name, t in g.tensors().items():
        assert torch.equal(t, getattr(g2, name)), name
    assert meta["sh_degree"] == deg
    assert meta["comments"]["source_image"] == "abc123"
    assert meta["comments"]["intrinsics"][0][0] == 500.0
    assert meta["comments"]["vd_version"]
    assert meta["comments"]["up"] == "-y"


def test_plyfile_reads_exact_inria_layout(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    g = rand_gaussians(n=50, deg=3)
    p = tmp_path / "a.ply"
    write_ply(p, g)
    ply = plyfile.PlyData.read(str(p))
    assert [e.name for e in ply.elements] == ["vertex"]
    v = ply["vertex"]
    assert [prop.name for prop in v.properties] == INRIA_DEG3
    assert all(v.data.dtype[name] == np.dtype("<f4") for name in INRIA_DEG3)
    assert not ply.text and ply.byte_order == "<"
    # pre-activation values and channel-major f_rest
    np.testing.assert_array_equal(v["opacity"], g.opacity_logits.numpy())
    np.testing.assert_array_equal(v["scale_1"], g.log_scales[:, 1].numpy())
    np.testing.assert_array_equal(v["rot_0"], g.quats[:, 0].numpy())
    np.testing.assert_array_equal(v["f_dc_2"], g.sh[:, 0, 2].numpy())
    np.testing.assert_array_equal(v["f_rest_0"], g.sh[:, 1, 0].numpy())  # R, coefficient 1
    np.testing.assert_array_equal(v["f_rest_14"], g.sh[:, 15, 0].numpy())  # R, coefficient 15
    np.testing.assert_array_equal(v["f_rest_15"], g.sh[:, 1, 1].numpy())  # G, coefficient 1
    np.testing.assert_array_equal(v["nx"], np.zeros(50, np.float32))
    assert any(c.startswith("vd_version: ") for c in ply.comments)


def test_writer_drops_nonfinite_and_transparent(tmp_path):
    g = rand_gaussians(n=10, deg=0)
    g.means[1, 0] = float("nan")
    g.log_scales[2, 2] = float("inf")
    g.sh[3, 0, 1] = float("-inf")
    g.opacity_logits[4] = -10.0  # sigmoid ~ 4.5e-5 < 1/255
    g.opacity_logits[5] = float(np.log(MIN_OPACITY / (1 - MIN_OPACITY))) + 0.01  # just above: kept
    rep = write_ply(tmp_path / "a.ply", g)
    assert (rep.written, rep.dropped_nonfinite, rep.dropped_transparent) == (6, 3, 1)
    g2, meta = read_ply(tmp_path / "a.ply")
    assert len(g2) == 6 and meta["count"] == 6
    keep = torch.tensor([0, 5, 6, 7, 8, 9])
    assert torch.equal(g2.means, g.means[keep])


def test_write_is_atomic_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import os

    p = tmp_path / "a.ply"
    write_ply(p, rand_gaussians(n=10, deg=0))
    before = p.read_bytes()

    def fail(a, b):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    from vd.errors import OutputError

    with pytest.raises(OutputError, match="^no space left on the device"):  # the cache's sentence
        write_ply(p, rand_gaussians(n=20, deg=1))
    assert p.read_bytes() == before
    assert [x.name for x in tmp_path.iterdir()] == ["a.ply"]


def test_empty_gaussians_round_trip(tmp_path):
    write_ply(tmp_path / "e.ply", Gaussians.empty())
    g, meta = read_ply(tmp_path / "e.ply")
    assert len(g) == 0 and meta["count"] == 0


# ------------------------------------------------------------------ other tools' layouts


def _write_ply_manual(path, fmt, elements, comments=()):
    """Write a PLY from (name, structured array) pairs with our own header (ascii or binary)."""
    types = {"f4": "float", "f8": "double", "u1": "uchar", "i1": "char", "u2": "ushort", "i2": "short", "u4": "uint", "i4": "int"}
    lines = ["ply", f"format {fmt} 1.0", *[f"comment {c}" for c in comments]]
    for name, arr in elements:
        lines.append(f"element {name} {len(arr)}")
        for field in arr.dtype.names:
            lines.append(f"property {types[arr.dtype[field].str[1:]]} {field}")
    lines.append("end_header")
    with open(path, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode())
        for _, arr in elements:
            if fmt == "ascii":
                for row in arr:
                    f.write((" ".join(repr(x.item()) for x in row) + "\n").encode())
            else:
                order = "<" if fmt == "binary_little_endian" else ">"
                arr.astype(arr.dtype.newbyteorder(order)).tofile(f)


def _vertex(n, names, seed=0):
    rng = np.random.default_rng(seed)
    arr = np.zeros(n, dtype=[(nm, "f4") for nm in names])
    for nm in names:
        arr[nm] = rng.normal(size=n).astype(np.float32)
    return arr


def test_reads_sharp_layout_with_extra_elements(tmp_path):
    # apple/ml-sharp save_ply: no normals, no f_rest, metadata in extra elements
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]
    v = _vertex(30, names)
    extr = np.zeros(16, dtype=[("extrinsic", "f4")])
    extr["extrinsic"] = np.eye(4, dtype=np.float32).ravel()
    intr = np.zeros(9, dtype=[("intrinsic", "f4")])
    intr["intrinsic"] = np.array([500, 0, 256, 0, 500, 192, 0, 0, 1], np.float32)
    size = np.array([(512,), (384,)], dtype=[("image_size", "u4")])
    frame = np.array([(1,), (30,)], dtype=[("frame", "i4")])
    disp = np.array([(0.1,), (0.9,)], dtype=[("disparity", "f4")])
    cs = np.array([(1,)], dtype=[("color_space", "u1")])
    ver = np.array([(1,), (5,), (0,)], dtype=[("version", "u1")])
    p = tmp_path / "sharp.ply"
    _write_ply_manual(p, "binary_little_endian", [("vertex", v), ("extrinsic", extr), ("intrinsic", intr),
                                                   ("image_size", size), ("frame", frame), ("disparity", disp),
                                                   ("color_space", cs), ("version", ver)])
    g, meta = read_ply(p)
    assert len(g) == 30 and g.sh_degree == 0
    np.testing.assert_array_equal(g.means[:, 2].numpy(), v["z"])
    np.testing.assert_array_equal(g.sh[:, 0, 1].numpy(), v["f_dc_1"])
    np.testing.assert_array_equal(g.quats[:, 3].numpy(), v["rot_3"])
    assert meta["extra"]["intrinsic"]["intrinsic"][0] == 500.0
    assert meta["extra"]["image_size"]["image_size"] == [512, 384]
    assert meta["extra"]["version"]["version"] == [1, 5, 0]


@pytest.mark.parametrize("fmt", ["ascii", "binary_big_endian", "binary_little_endian"])
@pytest.mark.parametrize("deg", [0, 1, 2])
def test_reads_inria_layouts_in_all_encodings(tmp_path, fmt, deg):
    names = inria_property_names(deg)
    v = _vertex(12, names, seed=deg)
    p = tmp_path / f"{fmt}.ply"
    _write_ply_manual(p, fmt, [("vertex", v)], comments=["Vertical Axis: z", "generated by a test"])
    g, meta = read_ply(p)
    assert meta["format"] == fmt and meta["sh_degree"] == deg and len(g) == 12
    np.testing.assert_allclose(g.means.numpy(), np.stack([v["x"], v["y"], v["z"]], 1), rtol=1e-6)
    np.testing.assert_allclose(g.opacity_logits.numpy(), v["opacity"], rtol=1e-6)
    if deg:
        k = (deg + 1) ** 2 - 1
        np.testing.assert_allclose(g.sh[:, 1, 2].numpy(), v[f"f_rest_{2 * k}"], rtol=1e-6)  # B, coefficient 1
        np.testing.assert_allclose(g.sh[:, k, 0].numpy(), v[f"f_rest_{k - 1}"], rtol=1e-6)
    assert meta["comments"]["Vertical Axis"] == "z"


def test_reads_point_cloud_with_uchar_colours_and_2dgs(tmp_path):
    arr = np.zeros(4, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    arr["red"] = [0, 255, 128, 10]
    p = tmp_path / "pc.ply"
    _write_ply_manual(p, "binary_little_endian", [("vertex", arr)])
    g, _ = read_ply(p)
    np.testing.assert_allclose(g.colors()[:, 0].numpy(), arr["red"] / 255.0, atol=1e-6)
    assert torch.equal(g.quats[:, 0], torch.ones(4))
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "rot_0", "rot_1", "rot_2", "rot_3"]
    p2 = tmp_path / "2dgs.ply"
    _write_ply_manual(p2, "binary_little_endian", [("vertex", _vertex(5, names))])
    g2, meta = read_ply(p2)
    assert meta["kind"] == "2dgs" and torch.isfinite(g2.log_scales).all()
    assert (g2.log_scales[:, 2] < g2.log_scales[:, :2].min(1).values).all()


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "not a PLY"),
        (b"hello world\n", "not a PLY"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\n", "header"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nproperty float y\n"
         b"property float z\nend_header\n" + b"\0" * 40, "truncated"),
        (b"ply\nformat weird 1.0\nelement vertex 1\nproperty float x\nend_header\n", "format"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty quux x\nend_header\n", "property"),
        (b"ply\nformat binary_little_endian 1.0\nelement face 1\nproperty float x\nend_header\n\0\0\0\0", "vertex"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float a\nend_header\n\0\0\0\0", "'x'"),
        (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n1 2 3\n", "PLY"),
    ],
)
def test_malformed_files_raise_input_error(tmp_path, content, words):
    p = tmp_path / "bad.ply"
    p.write_bytes(content)
    with pytest.raises(InputError) as e:
        read_ply(p)
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_f_rest_count_is_rejected(tmp_path):
    names = ["x", "y", "z"] + [f"f_rest_{i}" for i in range(7)]
    p = tmp_path / "r.ply"
    _write_ply_manual(p, "binary_little_endian", [("vertex", _vertex(3, names))])
    with pytest.raises(InputError, match="f_rest"):
        read_ply(p)


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_ply(tmp_path / "nope.ply")
    with pytest.raises(InputError, match="directory"):
        read_ply(tmp_path)


def test_colors_convention():
    g = Gaussians.from_rgb(torch.zeros(2, 3), torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.4, 0.6]]))
    assert torch.allclose(g.sh[:, 0], (torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.4, 0.6]]) - 0.5) / C0)
    assert torch.allclose(g.colors(), torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.4, 0.6]]), atol=1e-6)


def test_reads_playcanvas_compressed_ply(tmp_path):
    cp = pytest.importorskip("vd.export.compressed_ply")
    g = rand_gaussians(n=600, deg=1)
    g.log_scales.clamp_(-6, -1)
    p = tmp_path / "scene.compressed.ply"
    cp.write_compressed_ply(p, g)
    with pytest.raises(InputError, match="PlayCanvas compressed"):
        read_ply(p)  # the core reader names it; vd.export reads it
    from vd.export.read import read_gaussians

    g2, meta = read_gaussians(p)
    assert meta["kind"] == "compressed" and len(g2) == 600 and g2.sh_degree == 1
    # Morton-reordered and quantised (11/10/11 bits within each chunk's bounds)
    nearest = torch.cdist(g2.means, g.means).min(dim=1).values
    assert float(nearest.max()) < 0.01 * float(g.means.abs().max())
    from vd.export.inspect import ply_stats

    st = ply_stats(p)
    assert st["count"] == 600 and "compressed" in st["format"] and "scale_0" in st["columns"]
