"""`vd export --format glb`: glTF 2.0 binary with KHR_gaussian_splatting, checked by the Khronos glTF Validator
(npm gltf-validator, run through node; skipped without it) and read back by an independent reader (pygltflib)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
from _export_scene import write_vd_folder
from test_export_formats import random_splats

NODE = shutil.which("node")
SPLAT_TRANSFORM = shutil.which("splat-transform")


def validator_module() -> str | None:
    """Where npm installed gltf-validator globally, or None."""
    if NODE is None or shutil.which("npm") is None:
        return None
    root = subprocess.run(["npm", "root", "-g"], capture_output=True, text=True, timeout=60).stdout.strip()
    from pathlib import Path

    mod = Path(root) / "gltf-validator"
    return str(mod) if (mod / "package.json").is_file() else None


VALIDATOR = validator_module()
needs_validator = pytest.mark.skipif(
    VALIDATOR is None, reason="the Khronos glTF Validator (npm install -g gltf-validator) and node are needed"
)

VALIDATE_JS = """
const fs = require("fs");
const validator = require(process.argv[1]);  // node -e: the arguments start at argv[1]
validator.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])), {maxIssues: 1000})
  .then((r) => console.log(JSON.stringify(r)))
  .catch((e) => { console.error(String(e)); process.exit(1); });
"""


def validate(path) -> dict:
    r = subprocess.run([NODE, "-e", VALIDATE_JS, VALIDATOR, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def gltf_errors(report: dict) -> list[dict]:
    """The validator's errors and warnings except one kind: the validator (2.0.0-dev.3.10, the newest on npm)
    predates KHR_gaussian_splatting and calls every attribute the extension defines an invalid name; anything
    else, on any other attribute, counts."""
    out = []
    for m in report["issues"]["messages"]:
        known = (
            m["code"] == "MESH_PRIMITIVE_INVALID_ATTRIBUTE" and "/attributes/KHR_gaussian_splatting:" in m["pointer"]
        )
        if m["severity"] <= 1 and not known:
            out.append(m)
    return out


@pytest.fixture
def scene(tmp_path):
    """A vd output folder of the plane scene (input camera at the origin), exported as .glb."""
    from vd.ply import write_ply

    folder = write_vd_folder(tmp_path / "out")
    write_ply(folder / "coarse.ply", random_splats(400, 2, seed=5).to_gaussians())  # SH, rotations, every value varies
    return folder


def test_glb_holds_the_splats_in_gltf_axes(scene, tmp_path, run_vd):
    """pygltflib (not vd's reader) loads the accessors back: same count; positions, orientations and SH turned
    180 degrees about x (+Y up, the camera looking along -Z); linear scales, linear opacity, unit xyzw rotations."""
    import pygltflib

    from vd.export.transform import C0, SplatArrays, filter_splats, rotate_splats
    from vd.ply import read_ply

    out = tmp_path / "scene.glb"
    r = run_vd("export", scene, "--format", "glb", "-o", out, "--json")
    assert r.code == 0, r
    rep = json.loads(r.stdout)
    assert rep["written"] == 400 and rep["sh_degree"] == 2 and rep["camera"] is True
    gl = pygltflib.GLTF2().load(str(out))
    blob = gl.binary_blob()

    def acc(name):
        a = gl.accessors[
            getattr(gl.meshes[0].primitives[0].attributes, name)
            if not name.startswith("KHR")
            else gl.meshes[0].primitives[0].attributes.__dict__[name]
        ]
        view = gl.bufferViews[a.bufferView]
        n = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[a.type]
        dt = {5126: "<f4", 5121: "u1"}[a.componentType]
        return np.frombuffer(blob, dt, a.count * n, view.byteOffset + (a.byteOffset or 0)).reshape(a.count, n)

    prim = gl.meshes[0].primitives[0]
    assert (
        prim.mode == 0 and "KHR_gaussian_splatting" in prim.extensions and "KHR_gaussian_splatting" in gl.extensionsUsed
    )
    a, _ = filter_splats(SplatArrays.from_gaussians(read_ply(scene / "coarse.ply")[0]))
    ref = rotate_splats(a, np.diag([1.0, -1.0, -1.0]))
    pos = acc("POSITION")
    assert pos.shape == (400, 3) and np.allclose(pos, ref.means, atol=1e-6)
    assert np.allclose(pos[:, 1], -a.means[:, 1], atol=1e-6) and np.allclose(pos[:, 2], -a.means[:, 2], atol=1e-6)
    assert np.allclose(acc("KHR_gaussian_splatting:SCALE"), np.exp(a.log_scales), rtol=1e-5)
    assert np.allclose(acc("KHR_gaussian_splatting:OPACITY")[:, 0], 1 / (1 + np.exp(-a.opacity_logits)), atol=1e-6)
    rot = acc("KHR_gaussian_splatting:ROTATION").astype(np.float64)
    assert np.allclose(np.linalg.norm(rot, axis=1), 1, atol=1e-6)
    q = ref.quats / np.linalg.norm(ref.quats, axis=1, keepdims=True)
    assert np.allclose(np.abs((rot[:, [3, 0, 1, 2]] * q).sum(1)), 1, atol=1e-6)
    for k in range(9):
        deg = math.isqrt(k)
        assert np.allclose(acc(f"KHR_gaussian_splatting:SH_DEGREE_{deg}_COEF_{k - deg * deg}"), ref.sh[:, k], atol=1e-6)
    assert "KHR_gaussian_splatting:SH_DEGREE_3_COEF_0" not in prim.attributes.__dict__
    colour = acc("COLOR_0") / 255.0
    assert np.abs(colour[:, :3] - np.clip(a.sh[:, 0] * C0 + 0.5, 0, 1)).max() <= 0.5 / 255 + 1e-6
    # the input camera: a glTF camera at the origin, no rotation, the scene's vertical field of view
    cam_node = next(nd for nd in gl.nodes if nd.camera is not None)
    assert cam_node.matrix is None and cam_node.rotation is None
    persp = gl.cameras[cam_node.camera].perspective
    assert math.isclose(persp.yfov, 2 * math.atan(48 / (2 * 60.0)), rel_tol=1e-6) and math.isclose(
        persp.aspectRatio, 64 / 48
    )


def test_vd_reads_its_glb_back(scene, tmp_path, run_vd):
    from vd.export.read import read_gaussians
    from vd.export.transform import SplatArrays
    from vd.ply import read_ply

    out = tmp_path / "scene.glb"
    assert run_vd("export", scene, "--format", "glb", "-o", out).code == 0
    back = SplatArrays.from_gaussians(read_gaussians(out)[0])
    a = SplatArrays.from_gaussians(read_ply(scene / "coarse.ply")[0])
    assert np.allclose(back.means, a.means, atol=1e-6) and np.allclose(back.sh, a.sh, atol=1e-6)
    assert np.allclose(back.log_scales, a.log_scales, atol=1e-5)
    r = run_vd("inspect", out)
    assert r.code == 0 and "400 gaussians" in r.stdout and "sh_degree=2" in r.stdout, r
    r = run_vd("export", out, "--format", "spz", "-o", tmp_path / "again.spz", "--json")
    assert r.code == 0 and json.loads(r.stdout)["written"] == 400, r


@needs_validator
def test_khronos_validator_finds_no_errors(scene, tmp_path, run_vd):
    out = tmp_path / "scene.glb"
    assert run_vd("export", scene, "--format", "glb", "-o", out).code == 0
    report = validate(out)
    assert gltf_errors(report) == [], gltf_errors(report)
    assert report["info"]["drawCallCount"] == 1 and report["info"]["totalVertexCount"] == 400
    # the check can fail: a GLB whose position bounds are wrong is reported
    data = bytearray(out.read_bytes())
    text_len = int.from_bytes(data[12:16], "little")
    text = data[20 : 20 + text_len].decode()
    gl = json.loads(text)
    gl["accessors"][0]["max"] = [0.0, 0.0, 0.0]
    new = json.dumps(gl, separators=(",", ":")).ljust(text_len).encode()
    if len(new) == text_len:
        data[20 : 20 + text_len] = new
        (tmp_path / "bad.glb").write_bytes(bytes(data))
        assert gltf_errors(validate(tmp_path / "bad.glb")), "the validator should report the wrong bounds"


@pytest.mark.skipif(
    SPLAT_TRANSFORM is None, reason="splat-transform (npm @playcanvas/splat-transform) is not installed"
)
def test_vd_reads_a_glb_written_by_splat_transform(tmp_path, run_vd):
    """splat-transform maps a PLY to glTF by 180 degrees about z (vd: about x), so its GLB reads back in vd's
    frame turned 180 degrees about y from its PLY: the same splats, each one."""
    from test_export_read import same_splats

    from vd.export.ply import export_ply
    from vd.export.read import read_gaussians
    from vd.export.transform import SplatArrays, rotate_splats
    from vd.ply import read_ply

    export_ply(random_splats(300, 3, seed=7).to_gaussians(), tmp_path / "s.ply")
    r = subprocess.run(
        [SPLAT_TRANSFORM, "-q", "-w", str(tmp_path / "s.ply"), str(tmp_path / "s.glb")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    ours = SplatArrays.from_gaussians(read_gaussians(tmp_path / "s.glb")[0])
    src = rotate_splats(SplatArrays.from_gaussians(read_ply(tmp_path / "s.ply")[0]), np.diag([-1.0, 1.0, -1.0]))
    same_splats(ours, src, atol=2e-4)
    r = run_vd("inspect", tmp_path / "s.glb")
    assert r.code == 0 and "300 gaussians" in r.stdout and "sh_degree=3" in r.stdout, r


def test_glb_usage_and_damage(scene, tmp_path, run_vd):
    r = run_vd("export", scene, "--format", "glb", "-o", tmp_path / "x.gltf")
    assert r.code == 2 and ".glb" in r.stderr
    r = run_vd("export", scene, "--format", "glb", "--up", "+z", "-o", tmp_path / "x.glb")
    assert r.code == 2 and "--up" in r.stderr
    assert not (tmp_path / "x.glb").exists()
    (tmp_path / "junk.glb").write_bytes(b"not a glb at all, no")
    r = run_vd("inspect", tmp_path / "junk.glb")
    assert r.code == 1 and "not a glTF binary" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    assert run_vd("export", scene, "--format", "glb", "-o", tmp_path / "ok.glb").code == 0
    data = (tmp_path / "ok.glb").read_bytes()
    (tmp_path / "cut.glb").write_bytes(data[: len(data) // 2])
    r = run_vd("inspect", tmp_path / "cut.glb")
    assert r.code == 1 and "truncated" in r.stderr and "Traceback" not in r.stderr, r
