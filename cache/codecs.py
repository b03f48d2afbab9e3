"""Encode and decode artifact bytes in open formats: safetensors, JSON and PNG (never pickle)."""

from __future__ import annotations

import io
import json
import math
import struct
from pathlib import PurePath
from typing import Any, Mapping


def _to_numpy(value: Any):
    import numpy as np

    if hasattr(value, "detach"):  # torch tensor, converted without importing torch here
        t = value.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        value = t.contiguous().numpy()
    return np.ascontiguousarray(np.asarray(value))


def encode_tensors(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """safetensors bytes of numpy arrays or torch tensors (bfloat16 is stored as float32)."""
    from safetensors.numpy import save

    arrays = {str(k): _to_numpy(v) for k, v in tensors.items()}
    for k, a in arrays.items():
        if a.dtype == object:
            raise TypeError(f"tensor {k!r} has dtype object; only numeric arrays can be stored")
    return save(arrays, metadata=dict(metadata) if metadata else None)


def decode_tensors(data: bytes) -> dict:
    """dict of numpy arrays from safetensors bytes."""
    from safetensors.numpy import load

    return load(bytes(data))


def tensors_metadata(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors blob."""

    (n,) = struct.unpack("<Q", bytes(data[:8]))
    header = json.loads(bytes(data[8 : 8 + n]))
    return dict(header.get("__metadata__", {}) or {})


def jsonable(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return obj.as_posix()
    if hasattr(obj, "detach"):
        obj = obj.detach().cpu()
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return jsonable(obj.item())
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def encode_json(obj: Any) -> bytes:
    """UTF-8 JSON with sorted keys (deterministic bytes); NaN/Inf become null; numpy values become lists."""
    return json.dumps(jsonable(obj), sort_keys=True, ensure_ascii=False, allow_nan=False, indent=None).encode("utf-8")


def decode_json(data: bytes) -> Any:
    return json.loads(bytes(data).decode("utf-8"))


def encode_png(image: Any) -> bytes:
    """PNG bytes of a uint8 or uint16 HxW, HxWx1, HxWx3 or HxWx4 array (bool becomes 0/255 uint8)."""
    import numpy as np
    from PIL import Image

    a = _to_numpy(image)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"encode_png expects uint8 or uint16, got {a.dtype}")
    if a.ndim == 2:
        im = Image.fromarray(a.astype("<u2") if a.dtype == np.uint16 else a)
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        if a.dtype != np.uint8:
            raise TypeError("encode_png stores colour images as uint8 only")
        im = Image.fromarray(a)
    else:
        raise TypeError(f"encode_png expects HxW, HxWx3 or HxWx4, got shape {a.shape}")
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def decode_png(data: bytes):
    """numpy array from PNG bytes: uint8 HxW / HxWx3 / HxWx4, or uint16 HxW for 16-bit grey."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(bytes(data))) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im).astype(np.uint16)
        if im.mode == "I":
            return np.asarray(im).astype(np.uint16)
        if im.mode == "1":
            return np.asarray(im.convert("L")).copy()
        if im.mode in ("P", "LA"):
            return np.asarray(im.convert("RGBA" if "transparency" in im.info or im.mode == "LA" else "RGB")).copy()
        return np.asarray(im).copy()


__all__ = [
    "jsonable",
    "encode_tensors",
    "decode_tensors",
    "tensors_metadata",
    "encode_json",
    "decode_json",
    "encode_png",
    "decode_png",
]
