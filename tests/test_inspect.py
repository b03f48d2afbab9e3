"""`vd inspect`: table, --json, --strict, and one-sentence errors."""

from __future__ import annotations

import json
import math

import torch

from vd.gaussians import Gaussians
from vd.ply import write_ply


def _write(path, n=100, nan=False, identity_rot=False):
    gen = torch.Generator().manual_seed(0)
    g = Gaussians(
        torch.randn(n, 3, generator=gen),
        torch.log(torch.tensor([0.02, 0.01, 0.001])).expand(n, 3).clone(),
        torch.tensor([1.0, 0, 0, 0]).expand(n, 4).clone() if identity_rot else torch.randn(n, 4, generator=gen),
        torch.full((n,), 2.0),
        torch.randn(n, 4, 3, generator=gen),
    )
    write_ply(path, g)
    if nan:  # the writer drops non-finite rows, so poke NaN / Inf into the file afterwards
        data = bytearray(path.read_bytes())
        header_end = data.index(b"end_header\n") + len(b"end_header\n")
        import struct

        struct.pack_into("<f", data, header_end, math.nan)  # x of row 0
        struct.pack_into("<f", data, header_end + 4 * 26 + 4, math.inf)  # y of row 1 (26 floats per row at SH degree 1)
        path.write_bytes(bytes(data))
    return g


def test_table_and_summary_line(tmp_path, run_vd):
    p = tmp_path / "a.ply"
    _write(p)
    r = run_vd("inspect", str(p))
    assert r.code == 0, r
    assert r.stdout.strip().startswith(str(p)) and "100 gaussians" in r.stdout and "sh_degree=1" in r.stdout
    for word in ("bounds", "median exp(scale)", "anisotropy x/y", "anisotropy x/z", "opacity histogram", "scale_0", "rot_3"):
        assert word in r.stderr, word


def test_json_one_object_per_file(tmp_path, run_vd):
    a, b = tmp_path / "a.ply", tmp_path / "b.ply"
    _write(a, identity_rot=True)
    _write(b, n=7)
    r = run_vd("inspect", "--json", str(a), str(b))
    assert r.code == 0, r
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    sa, sb = (json.loads(x) for x in lines)
    assert sa["count"] == 100 and sb["count"] == 7 and sa["sh_degree"] == 1
    assert sa["columns"]["opacity"]["median"] == 2.0
    assert math.isclose(sa["scale"]["median_exp"][0], 0.02, rel_tol=1e-5)
    assert math.isclose(sa["anisotropy"]["x/y"]["median"], 2.0, rel_tol=1e-4)
    assert math.isclose(sa["anisotropy"]["x/z"]["p90"], 20.0, rel_tol=1e-4)
    assert sa["rotation"]["fraction_within_5deg"] == 1.0
    assert sum(sa["opacity"]["histogram"]) == 100 and sa["opacity"]["histogram"][-2] == 100  # sigmoid(2)=0.88
    assert sa["nan"] == 0 and sa["inf"] == 0
    assert sa["comments"]["up"] == "-y"
    assert sa["memory_bytes"] == 100 * 26 * 4  # 26 float32 columns at SH degree 1


def test_strict_fails_on_nan(tmp_path, run_vd):
    p = tmp_path / "nan.ply"
    _write(p, nan=True)
    r = run_vd("inspect", "--json", str(p))
    assert r.code == 0, r
    st = json.loads(r.stdout)
    assert st["nan"] == 1 and st["inf"] == 1
    assert st["columns"]["x"]["nan"] == 1 and st["columns"]["y"]["inf"] == 1
    r = run_vd("inspect", "--strict", str(p))
    assert r.code == 1, r
    assert "NaN" in r.stderr and "Traceback" not in r.stderr
    ok = tmp_path / "ok.ply"
    _write(ok)
    assert run_vd("inspect", "--strict", str(ok)).code == 0


def test_bad_paths_give_one_sentence(tmp_path, run_vd):
    r = run_vd("inspect", str(tmp_path / "missing.ply"))
    assert r.code == 1 and "not found" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.ply"
    bad.write_text("not a ply\n")
    r = run_vd("inspect", str(bad))
    assert r.code == 1 and "not a PLY" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_vd("inspect", str(tmp_path))
    assert r.code == 1 and "directory" in r.stderr


# ----------------------------------------------------------------------------- what is not splats (issue 27, 30)
def test_strict_fails_on_a_mesh_and_a_point_cloud_without_printing_tables(tmp_path, run_vd):
    from test_export_share import CUBE, write_point_cloud

    (tmp_path / "cube.ply").write_text(CUBE)
    write_point_cloud(tmp_path / "cloud.ply")
    for name, what in (("cube", "triangle mesh"), ("cloud", "point cloud")):
        r = run_vd("inspect", "--strict", str(tmp_path / f"{name}.ply"))
        assert r.code == 1, r
        assert r.stderr.strip().count("\n") == 0, r.stderr  # one sentence, no table before it
        assert f"not gaussian splats ({what})" in r.stderr and "Traceback" not in r.stderr
        assert "not gaussian splats" in r.stdout  # the summary line stays on stdout
    ok = tmp_path / "ok.ply"
    _write(ok)
    r = run_vd("inspect", "--strict", str(ok))
    assert r.code == 0 and r.stderr.strip() == "" and "100 gaussians" in r.stdout, r


def test_json_of_a_mesh_counts_no_gaussians(tmp_path, run_vd):
    from test_export_share import CUBE

    (tmp_path / "cube.ply").write_text(CUBE)
    st = json.loads(run_vd("inspect", "--json", str(tmp_path / "cube.ply")).stdout)
    assert st["is_splats"] is False and st["count"] == 0 and st["vertices"] == 8 and st["faces"] == 12


def test_point_cloud_is_named_as_such_in_plain_words(tmp_path, run_vd):
    from test_export_share import write_point_cloud

    write_point_cloud(tmp_path / "cloud.ply", extra=("opacity", "nx", "ny", "nz"))  # an opacity gives no shape
    r = run_vd("inspect", str(tmp_path / "cloud.ply"))
    assert r.code == 0, r
    assert "not gaussian splats: a point cloud (50 points) whose points lack scale_0..2, rot_0..3" in r.stdout, r.stdout
    assert "a points" not in r.stdout + r.stderr
    write_point_cloud(tmp_path / "half.ply", extra=("opacity", "scale_0", "scale_1", "scale_2"))
    r = run_vd("inspect", str(tmp_path / "half.ply"))
    assert "incomplete gaussian splats (50 vertices) whose vertices lack rot_0..3" in r.stdout, r.stdout
