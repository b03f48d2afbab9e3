"""`vd export --format colmap`: the refine dataset parses back (independent COLMAP text parser) and
reproduces the cameras; priors, masks, meta.json; the strict validator's messages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _export_scene import PLANE, K, make_views, plane_gaussians, write_vd_folder


# ---------------------------------------------------------------- an independent COLMAP text parser
def parse_cameras(text):
    cams = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cid, model, w, h, *params = line.split()
        cams[int(cid)] = (model, int(w), int(h), [float(x) for x in params])
    return cams


def parse_images(text):
    """COLMAP's reader: skip comments; each image line is followed by its POINTS2D line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]  # the final newline
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("#"):
            i += 1
            continue
        e = lines[i].split()
        assert len(e) == 10, lines[i]
        points2d = lines[i + 1]  # must exist (IndexError otherwise)
        out.append({"id": int(e[0]), "q": [float(x) for x in e[1:5]], "t": [float(x) for x in e[5:8]],
                    "camera": int(e[8]), "name": e[9], "points2d": points2d})
        i += 2
    return out


def parse_points(text):
    pts = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        e = line.split()
        pts.append((int(e[0]), [float(x) for x in e[1:4]], [int(x) for x in e[4:7]], float(e[7]), e[8:]))
    return pts


def qvec2rotmat(q):  # Hamilton, w first (as in COLMAP's scripts/python/read_write_model.py)
    w, x, y, z = q
    return np.array([
        [1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * z * x + 2 * w * y],
        [2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x],
        [2 * z * x - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y],
    ])


@pytest.fixture(scope="module")
def scene():
    g = plane_gaussians()
    views = make_views(g)
    # give one view a rotation so that quaternions are exercised
    from vd.cameras import look_at

    P = look_at((0.3, -0.1, 0.1), (0.0, 0.0, 2.0))
    from _export_scene import plane_depth

    from vd.views import View

    views[3] = View("003", "view", views[0].rgb, plane_depth(K, P), K.copy(), P, supervise=views[0].supervise,
                    spawn=views[0].spawn, hole=views[0].hole)
    return g, views


@pytest.fixture
def dataset(tmp_path, scene):
    from vd.export.colmap import points_from_gaussians, write_colmap_dataset

    g, views = scene
    out = tmp_path / "ds"
    write_colmap_dataset(out, views, points=points_from_gaussians(g), provenance={"source": "test"})
    return out


def test_colmap_files_parse_back_and_reproduce_cameras(dataset, scene):
    g, views = scene
    sp = dataset / "sparse" / "0"
    cams = parse_cameras((sp / "cameras.txt").read_text())
    imgs = parse_images((sp / "images.txt").read_text())
    assert len(imgs) == len(views) == len(cams)
    for im, v in zip(sorted(imgs, key=lambda e: e["id"]), views):
        assert im["points2d"] == ""  # present and empty
        model, w, h, (fx, fy, cx, cy) = cams[im["camera"]]
        assert model == "PINHOLE" and (w, h) == (v.rgb.shape[1], v.rgb.shape[0])
        assert np.allclose([fx, fy, cx, cy], [v.K[0, 0], v.K[1, 1], v.K[0, 2], v.K[1, 2]])
        assert abs(np.linalg.norm(im["q"]) - 1) < 1e-9
        R = qvec2rotmat(im["q"])
        t = np.array(im["t"])
        # world -> camera: the camera centre is -R^T t
        assert np.allclose(-R.T @ t, v.world_from_camera[:3, 3], atol=1e-9)
        assert np.allclose(R.T, v.world_from_camera[:3, :3], atol=1e-9)
        # a world point projects where the view sees it
        X = np.array([0.1, -0.2, 2.0])
        xc = R @ X + t
        uv = (np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]) @ xc)[:2] / xc[2]
        xc2 = np.linalg.inv(v.world_from_camera) @ np.append(X, 1)
        assert np.allclose(uv, (v.K @ xc2[:3])[:2] / xc2[2])
        from PIL import Image

        assert np.array_equal(np.asarray(Image.open(dataset / "images" / im["name"])), v.rgb)
    pts = parse_points((sp / "points3D.txt").read_text())
    assert len(pts) == len(g)
    assert pts[0][0] == 1 and pts[0][4] == [] and all(0 <= c <= 255 for c in pts[0][2])
    assert np.allclose(np.array([p[1] for p in pts]), g.means.numpy(), atol=1e-5)


def test_binary_model_matches_text_model_as_pycolmap_reads_it(dataset, scene):
    """gsplat reads COLMAP models with pycolmap's SceneManager, which prefers the .bin files (native
    struct formats 'L' = 8 bytes on 64-bit Linux) and whose text reader stops at an empty line."""
    import struct

    _, views = scene
    sp = dataset / "sparse" / "0"
    data = (sp / "cameras.bin").read_bytes()
    (n,) = struct.unpack("L", data[:8])
    off, cams = 8, {}
    for _ in range(n):
        cid, model, w, h = struct.unpack("IiLL", data[off:off + 24])
        cams[cid] = (model, w, h, struct.unpack("dddd", data[off + 24:off + 56]))
        off += 56
    assert off == len(data) and cams == {k: (1, m[1], m[2], tuple(m[3])) for k, m in parse_cameras((sp / "cameras.txt").read_text()).items()}
    f = (sp / "images.bin").open("rb")
    (n,) = struct.unpack("L", f.read(8))
    text = {e["id"]: e for e in parse_images((sp / "images.txt").read_text())}
    for _ in range(n):
        iid = struct.unpack("I", f.read(4))[0]
        q = struct.unpack("dddd", f.read(32))
        t = struct.unpack("ddd", f.read(24))
        cam = struct.unpack("I", f.read(4))[0]
        name = b"".join(iter(lambda: f.read(1), b"\0")).decode()
        (npts,) = struct.unpack("L", f.read(8))
        assert npts == 0 and name == text[iid]["name"] and cam == text[iid]["camera"]
        assert np.allclose(q, text[iid]["q"]) and np.allclose(t, text[iid]["t"])
    assert f.read() == b""
    data = (sp / "points3D.bin").read_bytes()
    (n,) = struct.unpack("L", data[:8])
    assert n == len(parse_points((sp / "points3D.txt").read_text()))
    pid, x, y, z = struct.unpack("<Qddd", data[8:40])
    assert pid == 1 and len(data) == 8 + n * (8 + 24 + 3 + 8 + 8)


def test_priors_masks_and_meta(dataset, scene):
    from PIL import Image

    _, views = scene
    meta = json.loads((dataset / "meta.json").read_text())
    assert meta["format"] == "vd-colmap-dataset" and "conventions" in meta and meta["provenance"]["source"] == "test"
    assert [v["source_name"] for v in meta["views"]] == [v.name for v in views]
    for mv, v in zip(meta["views"], views):
        stem = Path(mv["name"]).stem
        d = np.load(dataset / "priors" / "depth" / f"{stem}.npy")
        n = np.load(dataset / "priors" / "normal" / f"{stem}.npy")
        m = np.asarray(Image.open(dataset / "masks" / f"{stem}.png"))
        assert d.dtype == np.float32 and d.shape == v.depth.shape and np.allclose(d, v.depth)
        assert n.dtype == np.float32 and n.shape == v.depth.shape + (3,)
        assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
        assert np.array_equal(m == 255, v.supervise)
        assert np.allclose(mv["world_from_camera"], v.world_from_camera)
        # normals of the plane: the plane's normal in the camera frame, facing the camera
        a, b, _ = PLANE
        nw = np.array([a, b, -1.0]) / math.sqrt(a * a + b * b + 1)
        nc = v.world_from_camera[:3, :3].T @ nw
        ok = np.linalg.norm(n, axis=-1) > 0.5
        assert ok.mean() > 0.8
        assert np.allclose(n[ok], nc, atol=1e-3)


def test_refuses_non_empty_target_unless_force(tmp_path, run_vd, scene):
    g, views = scene
    src = write_vd_folder(tmp_path / "out", g, views)
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    r = run_vd("export", src, "--format", "colmap", "-o", target)
    assert r.code == 2 and "--force" in r.stderr
    assert (target / "keep.txt").read_text() == "mine"
    r = run_vd("export", src, "--format", "colmap", "-o", target, "--force", "--json")
    assert r.code == 0, r
    rep = json.loads(r.stdout)
    assert rep["views"] == 4 and rep["stage"] == "coarse"
    assert not (target / "keep.txt").exists() and (target / "sparse/0/images.txt").is_file()
    r = run_vd("export", "--validate", target)
    assert r.code == 0 and "valid" in r.stdout


def test_export_colmap_from_a_ply_needs_views(tmp_path, run_vd, scene):
    from vd.ply import write_ply

    write_ply(tmp_path / "s.ply", scene[0])
    r = run_vd("export", tmp_path / "s.ply", "--format", "colmap", "-o", tmp_path / "ds")
    assert r.code == 1 and "cameras.json" in r.stderr and not (tmp_path / "ds").exists()


# ---------------------------------------------------------------- validator
def test_validator_accepts_a_written_dataset(dataset):
    from vd.export.validate import validate_dataset

    assert validate_dataset(dataset) == []


def test_a_view_that_supervises_nothing_is_left_out_and_the_dataset_validates(tmp_path, scene, run_vd):
    """`vd coarse` keeps a move view whose uncovered pixels all hid what another view sees (no pixel supervised):
    its export must still be a dataset `vd refine` reads."""
    from vd.export.validate import validate_dataset

    g, views = scene
    folder_views = [*views]
    empty = folder_views[2]
    from vd.views import View

    folder_views[2] = View("002", "view", empty.rgb, empty.depth, empty.K, empty.world_from_camera,
                           supervise=np.zeros_like(empty.supervise), spawn=np.zeros_like(empty.spawn),
                           hole=empty.hole)
    folder = write_vd_folder(tmp_path / "coarse", g, folder_views)
    r = run_vd("export", folder, "--format", "colmap", "-o", tmp_path / "ds")
    assert r.code == 0, r
    assert validate_dataset(tmp_path / "ds") == []
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert [v["source_name"] for v in meta["views"]] == ["000", "001", "003"]
    assert meta["left_out"] == [{"source_name": "002", "why": "supervises no pixel"}]
    assert "002" in r.stderr and "left out" in r.stderr
    assert len(sorted((tmp_path / "ds" / "images").iterdir())) == 3


def test_validator_names_every_problem(dataset, run_vd):
    from vd.export.validate import validate_dataset

    (dataset / "images" / "000001.png").unlink()
    np.save(dataset / "priors" / "depth" / "000002.npy", np.zeros((5, 5), np.float32))
    (dataset / "priors" / "normal" / "000003.npy").unlink()
    (dataset / "images" / "stray.png").write_bytes((dataset / "images" / "000000.png").read_bytes())
    meta = json.loads((dataset / "meta.json").read_text())
    meta["views"][0]["world_from_camera"][0][3] += 0.5
    (dataset / "meta.json").write_text(json.dumps(meta))
    problems = validate_dataset(dataset)
    text = "\n".join(problems)
    assert "images/000001.png: missing" in text
    assert "priors/depth/000002.npy: shape (5, 5)" in text
    assert "priors/normal/000003.npy: missing" in text
    assert "images/stray.png: not listed in images.txt" in text
    assert "world_from_camera of 000000.png disagrees" in text
    assert len(problems) == 5
    r = run_vd("export", "--validate", dataset)
    assert r.code == 1
    for p in problems:
        assert p in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: {dataset} is not a valid refine dataset: 5 problems (listed above)"
    assert r.stdout == ""


def test_validator_missing_points2d_line_and_files(dataset):
    from vd.export.validate import validate_dataset

    sp = dataset / "sparse" / "0"
    lines = (sp / "images.txt").read_text().split("\n")
    first = next(i for i, ln in enumerate(lines) if ln and not ln.startswith("#"))
    del lines[first + 1]  # drop image 1's empty POINTS2D line
    (sp / "images.txt").write_text("\n".join(lines))
    (sp / "points3D.txt").unlink()
    (dataset / "meta.json").unlink()
    problems = validate_dataset(dataset)
    text = "\n".join(problems)
    assert "POINTS2D line after image 1 is missing" in text
    assert "points3D.txt: missing" in text
    assert "meta.json: missing" in text


def test_validator_mask_and_camera_problems(dataset):
    from PIL import Image

    from vd.export.validate import validate_dataset

    Image.fromarray(np.zeros((48, 64), np.uint8)).save(dataset / "masks" / "000000.png")
    cams = (dataset / "sparse/0/cameras.txt").read_text().replace("2 PINHOLE 64 48", "2 OPENCV 64 48")
    (dataset / "sparse/0/cameras.txt").write_text(cams)
    text = "\n".join(validate_dataset(dataset))
    assert "masks/000000.png: the mask has no valid pixel" in text
    assert "camera 2 has model OPENCV" in text


def test_validator_on_missing_folder(tmp_path, run_vd):
    r = run_vd("export", "--validate", tmp_path / "nothing")
    assert r.code == 1 and "does not exist" in r.stderr
