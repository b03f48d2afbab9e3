"""Gaussian export formats: INRIA PLY (--up, --sh-degree, filters), PlayCanvas compressed PLY, .splat."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest

from vd.export.transform import C0, SplatArrays, morton_order

SIG = lambda x: 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))  # noqa: E731


def random_splats(n=3000, deg=3, seed=0) -> SplatArrays:
    rng = np.random.default_rng(seed)
    k = (deg + 1) ** 2
    return SplatArrays(
        rng.uniform(-3, 3, (n, 3)).astype(np.float32),
        rng.uniform(-6, -1, (n, 3)).astype(np.float32),
        rng.normal(size=(n, 4)).astype(np.float32),
        rng.uniform(-4, 6, n).astype(np.float32),
        np.concatenate([rng.uniform(-1.5, 1.5, (n, 1, 3)), rng.uniform(-0.9, 0.9, (n, k - 1, 3))], 1).astype(np.float32),
    )


def unit(q):
    q = np.asarray(q, np.float64)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


# ------------------------------------------------------------------------- compressed PLY
def test_compressed_ply_round_trip_within_quantisation(tmp_path):
    from vd.export.compressed_ply import CHUNK, read_compressed_ply, write_compressed_ply

    a = random_splats(3000, deg=3)
    p = tmp_path / "s.compressed.ply"
    rep = write_compressed_ply(p, a, comments=["hello"])
    assert rep.written == 3000 and rep.chunks == math.ceil(3000 / CHUNK)
    b, comments = read_compressed_ply(p)
    assert "hello" in comments
    ref = a.take(morton_order(a.means))  # the file is Morton ordered
    n = len(ref)
    ci = np.arange(n) // CHUNK
    # per-chunk ranges give the quantisation step of 11/10/11-bit unorms
    for name, arr, dec in (("means", ref.means, b.means), ("log_scales", ref.log_scales, b.log_scales)):
        for ax, bits in zip(range(3), (11, 10, 11)):
            rng = np.array([np.ptp(arr[ci == c, ax]) for c in range(ci.max() + 1)])[ci]
            err = np.abs(arr[:, ax].astype(np.float64) - dec[:, ax])
            assert np.all(err <= rng / ((1 << bits) - 1) / 2 + 1e-5), name
    rgb_ref = ref.sh[:, 0] * C0 + 0.5
    rgb_dec = b.sh[:, 0] * C0 + 0.5
    crng = np.stack([np.ptp(rgb_ref[ci == c], axis=0) for c in range(ci.max() + 1)])[ci]
    assert np.all(np.abs(rgb_ref - rgb_dec) <= crng / 255 / 2 + 1e-5)
    alpha_ref = np.clip(SIG(ref.opacity_logits), 0.5 / 255, 1 - 0.5 / 255)
    assert np.abs(alpha_ref - SIG(b.opacity_logits)).max() <= 0.5 / 255 + 1e-6
    # smallest-three quaternion: 10 bits over [-1/sqrt2, 1/sqrt2]
    dots = np.abs((unit(ref.quats) * unit(b.quats)).sum(1))
    assert np.degrees(2 * np.arccos(np.clip(dots, 0, 1))).max() < 0.25
    # SH rest: 8 bits over [-4, 4]
    assert b.sh.shape == ref.sh.shape
    assert np.abs(ref.sh[:, 1:] - b.sh[:, 1:]).max() <= 8 / 256 + 1e-6


def test_compressed_ply_layout_filters_and_order(tmp_path):
    from plyfile import PlyData

    from vd.export.compressed_ply import CHUNK_PROPS, VERTEX_PROPS, write_compressed_ply

    a = random_splats(700, deg=1)
    a.means[3, 1] = np.nan
    a.quats[5] = 0.0
    a.opacity_logits[10:14] = -8.0  # alpha < 1/255
    rep = write_compressed_ply(tmp_path / "f.compressed.ply", a)
    assert (rep.written, rep.dropped_nonfinite, rep.dropped_transparent) == (694, 2, 4)
    ply = PlyData.read(str(tmp_path / "f.compressed.ply"))
    assert [e.name for e in ply.elements] == ["chunk", "vertex", "sh"]
    assert len(ply["chunk"].data) == 3 and len(ply["vertex"].data) == 694
    assert list(ply["chunk"].data.dtype.names) == list(CHUNK_PROPS)
    assert all(ply["chunk"].data.dtype[n] == np.dtype("<f4") for n in CHUNK_PROPS)
    assert list(ply["vertex"].data.dtype.names) == list(VERTEX_PROPS)
    assert all(ply["vertex"].data.dtype[n] == np.dtype("<u4") for n in VERTEX_PROPS)
    assert list(ply["sh"].data.dtype.names) == [f"f_rest_{i}" for i in range(9)]
    # chunk bounds contain their splats (decoded positions never leave them)
    from vd.export.compressed_ply import read_compressed_ply

    b, _ = read_compressed_ply(tmp_path / "f.compressed.ply")
    ch = ply["chunk"].data
    ci = np.arange(694) // 256
    for ax, k in enumerate("xyz"):
        assert np.all(b.means[:, ax] >= ch[f"min_{k}"][ci] - 1e-6) and np.all(b.means[:, ax] <= ch[f"max_{k}"][ci] + 1e-6)


def test_compressed_ply_is_much_smaller_than_float_ply(tmp_path):
    from vd.export import export_gaussians

    g = random_splats(20000, deg=3).to_gaussians()
    r1 = export_gaussians(g, tmp_path / "a.ply", "ply")
    r2 = export_gaussians(g, tmp_path / "a.compressed.ply", "compressed-ply")
    assert r2["bytes"] * 3.5 <= r1["bytes"]
    g0 = random_splats(20000, deg=0).to_gaussians()
    r1 = export_gaussians(g0, tmp_path / "b.ply", "ply")
    r2 = export_gaussians(g0, tmp_path / "b.compressed.ply", "compressed-ply")
    assert r2["bytes"] * 3.5 <= r1["bytes"]


def test_rotation_packing_round_trip_edge_cases():
    from vd.export.compressed_ply import pack_rotation, unpack_rotation

    q = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, -1], [0.5, -0.5, 0.5, -0.5], [-0.9, 0.1, 0.3, 0.2]], np.float64)
    d = unpack_rotation(pack_rotation(q))
    assert np.all(np.abs((unit(q) * d).sum(1)) > 1 - 1e-5)


@pytest.mark.skipif(shutil.which("splat-transform") is None, reason="splat-transform (npm @playcanvas/splat-transform) not on PATH")
def test_splat_transform_reads_vd_compressed_ply(tmp_path):
    from plyfile import PlyData

    from vd.export.compressed_ply import read_compressed_ply, write_compressed_ply

    a = random_splats(2000, deg=3, seed=3)
    src = tmp_path / "vd.compressed.ply"
    write_compressed_ply(src, a)
    dst = tmp_path / "decoded.ply"
    p = subprocess.run(["splat-transform", "-w", str(src), str(dst)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    theirs = PlyData.read(str(dst))["vertex"].data
    ours, _ = read_compressed_ply(src)
    assert len(theirs) == len(ours)
    cols = {"x": ours.means[:, 0], "y": ours.means[:, 1], "z": ours.means[:, 2],
            "scale_0": ours.log_scales[:, 0], "scale_2": ours.log_scales[:, 2],
            "f_dc_0": ours.sh[:, 0, 0], "f_dc_2": ours.sh[:, 0, 2], "f_rest_0": ours.sh[:, 1, 0], "f_rest_44": ours.sh[:, 15, 2]}
    for name, mine in cols.items():
        t = np.asarray(theirs[name], np.float64)
        for stat in (np.mean, np.std, np.min, np.max):
            assert stat(t) == pytest.approx(stat(mine.astype(np.float64)), rel=1e-4, abs=1e-4), (name, stat.__name__)
    # opacity: splat-transform decodes alpha without clamping; compare in alpha space
    assert np.mean(SIG(theirs["opacity"])) == pytest.approx(np.mean(SIG(ours.opacity_logits)), abs=1e-3)
    # rotations agree up to sign
    qt = unit(np.stack([theirs[f"rot_{i}"] for i in range(4)], 1))
    assert np.all(np.abs((qt * unit(ours.quats)).sum(1)) > 1 - 1e-5)


@pytest.mark.skipif(shutil.which("splat-transform") is None, reason="splat-transform (npm @playcanvas/splat-transform) not on PATH")
def test_vd_decoder_reads_splat_transform_compressed_ply(tmp_path):
    from vd.export.compressed_ply import read_compressed_ply
    from vd.ply import read_ply

    g = random_splats(1500, deg=0, seed=4).to_gaussians()
    from vd.ply import write_ply

    write_ply(tmp_path / "in.ply", g)
    p = subprocess.run(["splat-transform", "-w", str(tmp_path / "in.ply"), str(tmp_path / "st.compressed.ply")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    b, _ = read_compressed_ply(tmp_path / "st.compressed.ply")
    a, _ = read_ply(tmp_path / "in.ply")
    assert len(b) == len(a)
    assert np.allclose(np.sort(b.means[:, 0]), np.sort(a.means[:, 0].numpy()), atol=0.01)


# ------------------------------------------------------------------------- .splat
def test_splat_round_trip_within_8_bits(tmp_path):
    from vd.export.splat import read_splat, write_splat

    a = random_splats(1000, deg=0, seed=1)
    a.opacity_logits[0] = np.nan
    rep = write_splat(tmp_path / "s.splat", a)
    assert rep.written == 999 and rep.dropped_nonfinite == 1
    assert (tmp_path / "s.splat").stat().st_size == 32 * 999
    b = read_splat(tmp_path / "s.splat")
    ref = a.take(np.arange(1, 1000))
    # rows are sorted by -exp(sum log scale) * alpha: match them back by position
    order = np.lexsort(ref.means.T)
    border = np.lexsort(b.means.T)
    ref, b = ref.take(order), b.take(border)
    assert np.array_equal(ref.means, b.means)
    assert np.allclose(np.exp(ref.log_scales), np.exp(b.log_scales), rtol=1e-6)
    rgb_ref = np.clip(ref.sh[:, 0] * C0 + 0.5, 0, 1)
    assert np.abs(rgb_ref - (b.sh[:, 0] * C0 + 0.5)).max() <= 0.5 / 255 + 1e-6
    assert np.abs(np.clip(SIG(ref.opacity_logits), 0.5 / 255, 1 - 0.5 / 255) - SIG(b.opacity_logits)).max() <= 0.5 / 255 + 1e-6
    assert np.abs(unit(ref.quats) - b.quats).max() <= 0.5 / 128 + 1e-6 + 1 / 128  # rounding (+ clip at 255)
    assert np.all(np.abs((unit(ref.quats) * unit(b.quats)).sum(1)) > 0.999)


def test_splat_sort_order(tmp_path):
    from vd.export.splat import SPLAT_DTYPE, write_splat

    a = random_splats(200, deg=0, seed=2)
    write_splat(tmp_path / "o.splat", a)
    rec = np.frombuffer((tmp_path / "o.splat").read_bytes(), SPLAT_DTYPE)
    key = rec["scale"].astype(np.float64).prod(1) * rec["rgba"][:, 3]
    assert np.all(np.diff(key) <= 1e-3 * key.max())


# ------------------------------------------------------------------------- PLY, --up, --sh-degree
@pytest.mark.parametrize("up,R", [("+y", np.diag([1.0, -1, -1])), ("+z", np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]))])
def test_up_axis_rotates_positions_orientations_and_sh(tmp_path, up, R):
    from vd.export.ply import export_ply
    from vd.export.transform import sh_basis
    from vd.geometry import quat_to_rotmat
    from vd.ply import read_ply

    a = random_splats(300, deg=3, seed=5)
    a.opacity_logits[:] = 2.0
    export_ply(a.to_gaussians(), tmp_path / "u.ply", up=up)
    g, meta = read_ply(tmp_path / "u.ply")
    assert meta["comments"]["up"] == up
    assert np.allclose(g.means.numpy(), a.means @ R.T, atol=1e-5)
    assert np.allclose(quat_to_rotmat(g.quats.numpy()), R[None] @ quat_to_rotmat(a.quats), atol=1e-5)
    # the colour seen along R d after rotation equals the colour seen along d before
    d = np.random.default_rng(0).normal(size=(50, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    before = np.einsum("mk,nkc->nmc", sh_basis(d, 3), a.sh.astype(np.float64))
    after = np.einsum("mk,nkc->nmc", sh_basis(d @ R.T, 3), g.sh.numpy().astype(np.float64))
    assert np.allclose(before, after, atol=1e-4)


def test_up_default_is_identity_and_bad_up_is_usage_error(tmp_path):
    from vd.errors import UsageError
    from vd.export.ply import export_ply
    from vd.ply import read_ply

    a = random_splats(50, deg=1)
    a.opacity_logits[:] = 1.0
    export_ply(a.to_gaussians(), tmp_path / "i.ply")
    g, meta = read_ply(tmp_path / "i.ply")
    assert meta["comments"]["up"] == "-y"
    assert np.array_equal(g.means.numpy(), a.means)
    with pytest.raises(UsageError):
        export_ply(a.to_gaussians(), tmp_path / "x.ply", up="z")


def test_sh_degree_option(tmp_path):
    from vd.export.ply import export_ply
    from vd.ply import read_ply

    a = random_splats(40, deg=3)
    a.opacity_logits[:] = 1.0
    export_ply(a.to_gaussians(), tmp_path / "d1.ply", sh_degree=1)
    g, meta = read_ply(tmp_path / "d1.ply")
    assert g.sh_degree == 1 and len([p for p in meta["properties"] if p.startswith("f_rest_")]) == 9
    assert np.allclose(g.sh.numpy(), a.sh[:, :4])
    export_ply(a.to_gaussians(), tmp_path / "d0.ply", sh_degree=0)
    assert read_ply(tmp_path / "d0.ply")[0].sh_degree == 0


# ------------------------------------------------------------------------- CLI
def _scene_ply(path, n=500, nan=0, transparent=0):
    a = random_splats(n, deg=1, seed=7)
    a.opacity_logits[:] = 1.0
    g = a.to_gaussians()
    from vd.ply import write_ply

    write_ply(path, g)
    if nan or transparent:
        # write the bad rows with plyfile directly (vd's writer would drop them)
        from plyfile import PlyData, PlyElement

        v = PlyData.read(str(path))["vertex"].data.copy()
        v["x"][:nan] = np.nan
        v["opacity"][nan:nan + transparent] = -9.0
        PlyData([PlyElement.describe(v, "vertex")]).write(str(path))
    return path


def test_cli_exports_every_gaussian_format_and_reports_drops(tmp_path, run_vd):
    import json

    src = _scene_ply(tmp_path / "in.ply", nan=3, transparent=5)
    for fmt, name in (("ply", "o.ply"), ("compressed-ply", "o.compressed.ply"), ("splat", "o.splat")):
        r = run_vd("export", src, "--format", fmt, "-o", tmp_path / name, "--json")
        assert r.code == 0, r
        rep = json.loads(r.stdout)
        assert (rep["written"], rep["dropped_nonfinite"], rep["dropped_transparent"]) == (492, 3, 5)
        assert "dropped 3 non-finite and 5 transparent" in r.stderr
        assert (tmp_path / name).is_file()
    r = run_vd("export", tmp_path / "o.compressed.ply", "--format", "ply", "-o", tmp_path / "back.ply", "--up", "+z")
    assert r.code == 0, r
    assert r.stdout.strip() == str(tmp_path / "back.ply")


def test_cli_usage_errors(tmp_path, run_vd):
    src = _scene_ply(tmp_path / "in.ply")
    (tmp_path / "exists.ply").write_bytes(b"x")
    r = run_vd("export", src, "--format", "ply", "-o", tmp_path / "exists.ply")
    assert r.code == 2 and "--force" in r.stderr and (tmp_path / "exists.ply").read_bytes() == b"x"
    assert run_vd("export", src, "--format", "ply", "-o", tmp_path / "exists.ply", "--force").code == 0
    assert run_vd("export", src, "--format", "obj", "-o", tmp_path / "x").code == 2
    assert run_vd("export", src, "--format", "ply", "-o", tmp_path / "x.ply", "--up", "z").code == 2
    assert run_vd("export", src, "--format", "ply", "-o", tmp_path / "x.ply", "--stage", "coarse").code == 2
    assert run_vd("export", src, "--format", "ply").code == 2
    assert run_vd("export", src, "--format", "splat", "-o", tmp_path / "x.splat", "--sh-degree", "2").code == 2
    r = run_vd("export", tmp_path / "nope.ply", "--format", "ply", "-o", tmp_path / "y.ply")
    assert r.code == 1 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = run_vd("export", tmp_path / "photo.png", "--format", "ply", "-o", tmp_path / "y.ply")
    assert r.code == 1
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    r = run_vd("export", tmp_path / "photo.png", "--format", "ply", "-o", tmp_path / "y.ply")
    assert r.code == 1 and "vd coarse" in r.stderr
    assert not (tmp_path / "y.ply").exists() and not (tmp_path / "x.ply").exists()


def test_the_format_is_read_from_the_output_name_and_a_name_for_another_is_refused(tmp_path, run_vd):
    import json

    from vd.export import format_of
    from vd.export.read import gaussian_file_kind

    src = _scene_ply(tmp_path / "in.ply")
    for name, fmt in (("a.spz", "spz"), ("a.splat", "splat"), ("a.compressed.ply", "compressed-ply"), ("a.ply", "ply")):
        r = run_vd("export", src, "-o", tmp_path / name, "--json")
        assert r.code == 0 and json.loads(r.stdout)["format"] == fmt, r
    assert gaussian_file_kind(tmp_path / "a.spz") == "spz" and (tmp_path / "a.spz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "a.splat").stat().st_size == 500 * 32  # 32 bytes a splat, no header
    r = run_vd("export", src, "-o", tmp_path / "a.xyz", "--json")  # a suffix no format writes: the default, ply
    assert r.code == 0 and json.loads(r.stdout)["format"] == "ply"
    # PLY bytes in a file named .spz open in no viewer: refused before anything is written
    r = run_vd("export", src, "--format", "ply", "-o", tmp_path / "b.spz")
    assert r.code == 2 and not (tmp_path / "b.spz").exists()
    assert r.stderr == (
        "error: --format ply writes .ply, but the output b.spz is named for spz; name it b.ply, or pass --format spz\n"
    )
    assert run_vd("export", src, "--format", "splat", "-o", tmp_path / "b.compressed.ply").code == 2
    assert run_vd("export", src, "--format", "compressed-ply", "-o", tmp_path / "b.ply").code == 0
    assert run_vd("export", src, "--format", "spz", "-o", tmp_path / "b").code == 0  # no suffix: the user's choice
    assert [format_of(n) for n in ("m.obj", "m.glb", "v.MP4", "v.gif", "p.htm", "dataset", ".ply")] == [
        "mesh", "glb", "video", "video", "html", None, None,
    ]
