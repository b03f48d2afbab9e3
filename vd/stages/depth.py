"""The depth stage: normalised RGB -> depth, intrinsics, validity, normals; memoised.

    out = run_depth(image, backend="auto", focal=None, fov=None, intrinsics=None,
                    max_resolution=512, device=None, auto_fetch=None, cache=None)
    out.image (LoadedImage), out.result (DepthResult), out.key, out.hit, out.backend (name)

The cache key holds the normalised image's content hash, the backend's identity (weights hash,
or the user depth map's hash and intrinsics), the device class and dtype; artifacts are
`depth.safetensors` (depth, K, valid, normals) and `meta.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from vd.fetch.licences import licences_of
from vd.fsio import atomic_write_bytes, output_transaction
from vd.image import LoadedImage, load_image
from vd.models.choose import get_depth_backend
from vd.models.depth import DepthBackend, DepthResult

DEPTH_STAGE_VERSION = 1


@dataclass
class DepthStageOutput:
    image: LoadedImage
    result: DepthResult
    key: str
    hit: bool
    backend: str
    identity: str
    record: object = None
    licences: dict = field(default_factory=dict)  # of the registry weights the backend uses (vd.fetch.licences)


def encode_result(result: DepthResult, meta: dict) -> dict[str, bytes]:
    from vd.cache import codecs

    tensors = {
        "depth": result.depth.astype(np.float32),
        "K": np.asarray(result.K, dtype=np.float32),
        "valid": result.valid.astype(np.uint8),
    }
    if result.normals is not None:
        tensors["normals"] = result.normals.astype(np.float32)
    return {"depth.safetensors": codecs.encode_tensors(tensors), "meta.json": codecs.encode_json(meta)}


def decode_result(record) -> DepthResult:
    from vd.cache import codecs

    t = codecs.decode_tensors(record.read("depth.safetensors"))
    return DepthResult(
        depth=np.asarray(t["depth"], dtype=np.float32),
        K=np.asarray(t["K"], dtype=np.float32),
        valid=np.asarray(t["valid"]).astype(bool),
        normals=np.asarray(t["normals"], dtype=np.float32) if "normals" in t else None,
    )


def depth_key(image: LoadedImage, backend: DepthBackend, *, dtype: str = "float32") -> str:
    from vd.cache import stage_key

    return stage_key(
        stage="depth",
        version=DEPTH_STAGE_VERSION,
        params={"size": list(image.size)},
        inputs={"image": image.content_hash},
        models={backend.name: backend.identity},
        backend=f"{backend.name}@{'cuda' if str(getattr(backend, 'device', 'cpu')).startswith('cuda') else 'cpu'}",
        dtype=dtype,
        seed=0,
    )


def depth_backend_for(loaded: LoadedImage, backend, **options) -> DepthBackend:
    """`backend` itself when it is a built DepthBackend, else the one its name picks for this image
    (`vd.models.choose.get_depth_backend` options: focal, fov, device, auto_fetch, intrinsics, model, licence)."""
    if isinstance(backend, DepthBackend):
        return backend
    return get_depth_backend(backend, image_path=loaded.path, **options)


def run_depth(
    image,
    *,
    backend="auto",
    focal: Optional[float] = None,
    fov: Optional[float] = None,
    intrinsics=None,
    max_resolution: int = 512,
    device: Optional[str] = None,
    auto_fetch: Optional[bool] = None,
    cache=None,
    model: str = "vitl",
    licence: Optional[str] = None,
    shared_backends: Optional[dict] = None,
) -> DepthStageOutput:
    """Depth for one image (a path or a LoadedImage), memoised in the cache. `model` is the MoGe-2 size,
    `licence` the licence policy (`vd.fetch.licences.policy`); `shared_backends`, a dict kept across calls,
    lends every image of a run the same model (the file backend stays per image: its own depth map)."""
    from vd.cache import Cache
    from vd.models import memory

    loaded = image if isinstance(image, LoadedImage) else load_image(image, max_resolution=max_resolution)
    be = depth_backend_for(
        loaded,
        backend,
        focal=focal,
        fov=fov,
        device=device,
        auto_fetch=auto_fetch,
        intrinsics=intrinsics,
        model=model,
        licence=licence,
    )
    if shared_backends is not None and be.name != "file":
        be = shared_backends.setdefault((be.name, model), be)
    cache = cache or Cache.open()
    key = depth_key(loaded, be)

    def compute() -> dict[str, bytes]:
        with memory.track(f"depth ({loaded.path.name})", device=getattr(be, "device", "cpu")):
            res = be.estimate(loaded.rgb, plan=loaded.plan)
        meta = {
            "backend": be.name,
            "identity": be.identity,
            "width": res.width,
            "height": res.height,
            "original_size": list(loaded.original_size),
        }
        return encode_result(res, meta)

    record, hit = cache.memoise(key, compute, stage="depth", image=str(loaded.path))
    return DepthStageOutput(
        image=loaded,
        result=decode_result(record),
        key=key,
        hit=hit,
        backend=be.name,
        identity=be.identity,
        record=record,
        licences=licences_of(be.registry_models),
    )


def colorize_depth(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """uint8 RGB visualisation: inverse depth through the turbo colour map, invalid pixels black."""
    import cv2

    inv = np.zeros(depth.shape, np.float32)
    v = valid & (depth > 0)
    inv[v] = 1.0 / depth[v]
    if v.any():
        lo, hi = np.percentile(inv[v], [1, 99])
        x = np.clip((inv - lo) / max(hi - lo, 1e-12), 0, 1)
    else:
        x = inv
    bgr = cv2.applyColorMap((x * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    rgb = bgr[..., ::-1].copy()
    rgb[~v] = 0
    return rgb


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def intrinsics_json(result: DepthResult) -> dict:
    K = np.asarray(result.K, dtype=np.float64)
    fx_deg, fy_deg = result.fov_deg()
    return {
        "K": [[round(float(x), 6) for x in row] for row in K],
        "width": result.width,
        "height": result.height,
        "fx": float(K[0, 0]),
        "fy": float(K[1, 1]),
        "cx": float(K[0, 2]),
        "cy": float(K[1, 2]),
        "fov_x_deg": round(fx_deg, 4),
        "fov_y_deg": round(fy_deg, 4),
        "convention": (
            "OpenCV pinhole (x right, y down, z forward), pixel centres at integer coordinates; depth.npy is z-depth"
        ),
    }


def write_outputs(out_dir, stage: DepthStageOutput) -> dict[str, Path]:
    """depth.npy, depth.png, mask.png, normals.npy (when present), intrinsics.json; atomic writes."""
    import json
    from pathlib import Path

    from vd.cache import codecs

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    r = stage.result
    files = {
        "depth": (out_dir / "depth.npy", _npy_bytes(np.where(r.valid, r.depth, 0).astype(np.float32))),
        "depth_png": (out_dir / "depth.png", codecs.encode_png(colorize_depth(r.depth, r.valid))),
        "mask": (out_dir / "mask.png", codecs.encode_png(r.valid)),
    }
    if r.normals is not None:
        files["normals"] = (out_dir / "normals.npy", _npy_bytes(r.normals.astype(np.float32)))
    files["intrinsics"] = (out_dir / "intrinsics.json", (json.dumps(intrinsics_json(r), indent=2) + "\n").encode())
    with output_transaction():  # all the files, or none under their final names
        for path, data in files.values():
            atomic_write_bytes(path, data)
    return {k: p for k, (p, _) in files.items()}


def depth_one(image, *, out, max_resolution: int = 512, **options) -> dict:
    """What `vd depth` does for one image: run (or reuse) the stage, write the files, describe them.
    `options` are `run_depth`'s (backend, model, licence, focal, fov, intrinsics, device, auto_fetch,
    shared_backends)."""
    loaded = load_image(image, max_resolution=max_resolution)
    st = run_depth(loaded, **options)
    files = write_outputs(out, st)
    r = st.result
    fx, fy = r.fov_deg()
    lo, hi = r.depth_range()
    info = {
        "image": str(loaded.path),
        "out": str(out),
        "backend": st.backend,
        "cached": st.hit,
        "key": st.key,
        "width": r.width,
        "height": r.height,
        "focal": float(r.K[0, 0]),
        "fov_x_deg": round(fx, 3),
        "fov_y_deg": round(fy, 3),
        "depth_min": lo,
        "depth_max": hi,
        "valid_fraction": round(r.valid_fraction(), 6),
        "licences": st.licences,
        "files": {k: str(p) for k, p in files.items()},
    }
    return {"json": info, "paths": [str(p) for p in files.values()]}


__all__ = [
    "run_depth",
    "depth_one",
    "write_outputs",
    "colorize_depth",
    "intrinsics_json",
    "DepthStageOutput",
    "depth_key",
    "encode_result",
    "decode_result",
    "DEPTH_STAGE_VERSION",
]
