"""`vd export SOURCE` resolution: a processed image's cached stages (--stage), output folders."""

from __future__ import annotations

import json
import time

import pytest
from _export_scene import make_views, plane_gaussians, write_vd_folder


def _put_frames(cache, key, stage, image, views, g, meta):
    from vd.views import encode_record

    return cache.put(key, encode_record(views, g, meta), stage=stage, image=image)


@pytest.fixture
def processed_image(tmp_path):
    """A fake processed image: a scaffold record (2 frames) and a chain of 2 coarse views + a stop."""
    from vd.cache import Cache

    img = tmp_path / "photo.png"
    img.write_bytes(b"not really decoded")
    g = plane_gaussians()
    views = make_views(g)
    n = len(g)
    cache = Cache.open()
    _put_frames(cache, "s" * 32, "scaffold", img, views[:2], g[: n // 2], {})
    time.sleep(0.01)
    _put_frames(cache, "a" * 32, "coarse-view", img, views[2:3], g[n // 2: 3 * n // 4], {"view": 1})
    time.sleep(0.01)
    _put_frames(cache, "b" * 32, "coarse-view", img, views[3:4], g[3 * n // 4:], {"view": 2})
    time.sleep(0.01)
    _put_frames(cache, "c" * 32, "coarse-view", img, [], None, {"view": 3, "stopped": True})
    return img, g, views


def test_image_source_latest_stage_and_stage_option(processed_image, tmp_path, run_vd):
    from vd.ply import read_ply

    img, g, views = processed_image
    r = run_vd("export", img, "--format", "ply", "-o", tmp_path / "c.ply", "--json")
    assert r.code == 0, r
    assert json.loads(r.stdout)["stage"] == "coarse"
    assert len(read_ply(tmp_path / "c.ply")[0]) == len(g)  # scaffold + both views
    r = run_vd("export", img, "--format", "ply", "-o", tmp_path / "s.ply", "--stage", "scaffold")
    assert r.code == 0, r
    assert len(read_ply(tmp_path / "s.ply")[0]) == len(g) // 2
    r = run_vd("export", img, "--format", "colmap", "-o", tmp_path / "ds", "--json")
    assert r.code == 0, r
    assert json.loads(r.stdout)["views"] == 4
    r = run_vd("export", img, "--format", "ply", "-o", tmp_path / "f.ply", "--stage", "fine")
    assert r.code == 1 and "no fine result" in r.stderr


def test_the_cached_coarse_stage_holds_the_gaussians_that_sealed_its_pinholes(processed_image, tmp_path, run_vd):
    """`vd coarse` seals the finished scene's pinholes last (a "coarse-seal" entry after the last view):
    the coarse stage exported from the cache is the whole scene, as coarse.ply is."""
    from vd.cache import Cache
    from vd.ply import read_ply

    img, g, views = processed_image
    time.sleep(0.01)
    sealed = plane_gaussians()[:7]
    _put_frames(Cache.open(), "d" * 32, "coarse-seal", img, [], sealed, {"sealed": 7})
    r = run_vd("export", img, "--format", "ply", "-o", tmp_path / "c.ply")
    assert r.code == 0, r
    assert len(read_ply(tmp_path / "c.ply")[0]) == len(g) + 7
    r = run_vd("export", img, "--format", "ply", "-o", tmp_path / "s.ply", "--stage", "scaffold")
    assert r.code == 0 and len(read_ply(tmp_path / "s.ply")[0]) == len(g) // 2


def test_folder_stage_choice(tmp_path, run_vd):
    from vd.ply import read_ply, write_ply

    g = plane_gaussians()
    folder = write_vd_folder(tmp_path / "out", g)
    write_ply(folder / "scaffold.ply", g[:100])
    r = run_vd("export", folder, "--format", "ply", "-o", tmp_path / "s.ply", "--stage", "scaffold", "--json")
    assert r.code == 0 and json.loads(r.stdout)["stage"] == "scaffold"
    assert len(read_ply(tmp_path / "s.ply")[0]) == 100
    r = run_vd("export", folder, "--format", "ply", "-o", tmp_path / "f.ply", "--stage", "fine")
    assert r.code == 1 and "fine.ply" in r.stderr
    assert run_vd("export", folder, "--format", "ply", "-o", tmp_path / "x.ply", "--stage", "final").code == 2


def test_folder_default_is_fine_written_by_vd_fine(tmp_path, run_vd):
    """`vd fine` writes <coarse folder>/fine/fine.ply; the folder's latest stage is then fine."""
    from vd.ply import read_ply, write_ply

    g = plane_gaussians()
    folder = write_vd_folder(tmp_path / "out", g)
    r = run_vd("export", folder, "--format", "ply", "-o", tmp_path / "c.ply", "--json")
    assert r.code == 0 and json.loads(r.stdout)["stage"] == "coarse"
    (folder / "fine").mkdir()
    write_ply(folder / "fine" / "fine.ply", g[:50])
    r = run_vd("export", folder, "--format", "ply", "-o", tmp_path / "f.ply", "--json")
    assert r.code == 0 and json.loads(r.stdout)["stage"] == "fine"
    assert len(read_ply(tmp_path / "f.ply")[0]) == 50


def test_colmap_meta_json_holds_no_absolute_paths(tmp_path, run_vd):
    folder = write_vd_folder(tmp_path / "scene" / "out")
    out = tmp_path / "datasets" / "ds"
    r = run_vd("export", folder, "--format", "colmap", "-o", out)
    assert r.code == 0, r
    text = (out / "meta.json").read_text()
    assert str(tmp_path) not in text
    prov = json.loads(text)["provenance"]
    assert prov["source"] == "../../scene/out" and prov["gaussians"] == "../../scene/out/coarse.ply"
    assert (out / prov["gaussians"]).resolve() == (folder / "coarse.ply").resolve()
