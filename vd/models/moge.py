"""The `moge` depth backend: MoGe-2 (ViT-L, ViT-B or ViT-S, normal head) through the `moge` package.

Install: `pip install -e ".[moge]"` in the vd checkout, then `pip install --no-deps dlr-moge==2.0.0 dlr-utils3d==1.3`
(see .ci/nodeps.txt). dlr-moge declares torchvision, gradio, trimesh, matplotlib and
opencv-python as dependencies, but the model code (`moge.model.v2`) needs none of them: only
torch, numpy, scipy, opencv (any flavour; we ship opencv-python-headless), huggingface_hub
(imported for `hf_hub_download`, never called for a local file) and `utils3d` (dlr-utils3d, whose
own moderngl/matplotlib dependencies are only used by its rendering helpers). No torchvision
shim is needed. Weights: `vd fetch moge` (Ruicheng/moge-2-vitl-normal `model.pt`, a dict with
`model_config` and `model`, read with `torch.load(weights_only=True)`); the smaller sizes
(`--depth-model vitb|vits`) are the registry entries `moge-vitb` / `moge-vits`
(Ruicheng/moge-2-vitb-normal, moge-2-vits-normal), same layout, same loading code: the
checkpoint's `model_config` names its DINOv2 backbone.

Output: metric z-depth (MoGe-2's scale head), K from MoGe's FoV estimate (centred principal
point) unless a camera is given — then MoGe solves only for the depth shift with that camera's FoV
(the VistaDream port ignored the K it was handed: docs/upstream.md#depth-with-a-given-focal), the validity mask,
unit normals in the OpenCV camera frame. MoGe's `infer` takes only a horizontal FoV and assumes square pixels and a
centred principal point; a given K with fy != fx or an off-centre (cx, cy) is honoured by running
MoGe on the image resampled to the centred camera with focal fx that sees the same rays
(`vd.models.intrinsics.centred_view`), then resampling depth, mask and normals back: z along a ray
does not depend on how the image plane is parametrised, so the returned K and depth agree.
MoGe's weights load strictly (its own `from_pretrained` does not).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from vd import console
from vd.errors import MissingWeightsError, UsageError, VdError
from vd.image import plan_to
from vd.install import pip_install
from vd.models.depth import DepthBackend, DepthResult, check_rgb
from vd.models.intrinsics import centred_view, read_intrinsics_json, resolve_K
from vd.models.memory import release_torch_memory

MOGE_INSTALL = pip_install("moge") + " && pip install --no-deps dlr-moge==2.0.0 dlr-utils3d==1.3"

# --depth-model -> the registry entry of its weights
MOGE_REGISTRY = {"vitl": "moge", "vitb": "moge-vitb", "vits": "moge-vits"}


def registry_model(size: str) -> str:
    """The registry entry of a MoGe-2 size (`--depth-model`); UsageError for an unknown size."""
    if size not in MOGE_REGISTRY:
        raise UsageError(f"--depth-model must be one of {', '.join(MOGE_REGISTRY)}, got {size!r}")
    return MOGE_REGISTRY[size]


def import_moge_model():
    """`moge.model.v2.MoGeModel`, or a VdError with the install command."""
    try:
        from moge.model.v2 import MoGeModel
    except ImportError as e:
        raise VdError(
            f"the moge depth backend needs the MoGe package ({e.name or e}); install it with: {MOGE_INSTALL}"
        ) from None
    return MoGeModel


def load_moge(path, device: str = "cpu", entry: str = "moge"):
    """Load a MoGe-2 `model.pt` (the published layout: `model_config` + `model`) onto `device`, in eval mode.

    MoGe's own `from_pretrained` loads with strict=False, so a checkpoint that does not match the
    installed code would leave random layers and give wrong depth without a word: vd loads strictly.
    `entry` (the registry model) names the `vd fetch` line of the error messages."""
    import torch

    MoGeModel = import_moge_model()
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        model = MoGeModel(**ckpt["model_config"])
    except Exception as e:  # torch.load's UnpicklingError, a missing key, a config the code does not know...
        raise VdError(
            f"cannot load MoGe weights from {path} ({str(e).strip()[:160]}); re-fetch with: vd fetch {entry} --force"
        ) from None
    missing, unexpected = _state_dict_mismatch(model, ckpt["model"])
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise VdError(
            f"the MoGe checkpoint {path} does not match the installed MoGe code (dlr-moge "
            f"{_moge_version()}): {len(missing)} weights missing, {len(unexpected)} unexpected "
            f"(first: {first}); re-fetch with: vd fetch {entry} --force, or install: {MOGE_INSTALL}"
        )
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except Exception as e:  # shapes that differ
        raise VdError(
            f"the MoGe checkpoint {path} does not match the installed MoGe code (dlr-moge "
            f"{_moge_version()}): {str(e).strip().splitlines()[-1][:160]}; re-fetch with: "
            f"vd fetch {entry} --force"
        ) from None
    model = model.to(torch.device(device)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _state_dict_mismatch(model, state: dict) -> tuple[list[str], list[str]]:
    want = set(model.state_dict())
    got = set(state)
    return sorted(want - got), sorted(got - want)


def _moge_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("dlr-moge")
    except importlib.metadata.PackageNotFoundError:
        return "?"


class MogeDepth(DepthBackend):
    name = "moge"
    estimates_novel_views = True

    def __init__(
        self,
        *,
        device=None,
        focal=None,
        fov=None,
        auto_fetch=None,
        weights: Optional[Path] = None,
        resolution_level: int = 9,
        intrinsics=None,
        model: str = "vitl",
    ):

        self.model = model
        self.entry = registry_model(model)  # the registry model whose weights load
        self.registry_models = (self.entry,)
        self._device = device
        self.focal, self.fov = focal, fov
        self.intrinsics_path = intrinsics
        self._intr = read_intrinsics_json(intrinsics) if intrinsics is not None else None
        self.auto_fetch = auto_fetch
        self._weights = Path(weights) if weights is not None else None
        self.resolution_level = int(resolution_level)
        self._model = None
        self._identity: Optional[str] = None

    def weights_path(self) -> Path:
        if self._weights is not None:
            return self._weights
        try:
            from vd.fetch.registry import require
        except ImportError:  # pragma: no cover - the fetch module ships with vd
            raise MissingWeightsError(
                f"model weights for {self.entry!r} are missing; run: vd fetch {self.entry}"
            ) from None
        files = require(self.entry, auto_fetch=self.auto_fetch)
        self._weights = Path(files["model.pt"])
        return self._weights

    def _compute_identity(self) -> str:
        if self._identity is None:
            path = self.weights_path()  # fails first with the fetch command when missing
            try:
                from vd.fetch.registry import weights_id

                wid = weights_id(self.entry) if self._weights_from_registry(path, self.entry) else None
            except ImportError:  # pragma: no cover
                wid = None
            if wid is None:
                import xxhash

                h = xxhash.xxh3_128()
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 22), b""):
                        h.update(chunk)
                wid = f"{self.entry}:model.pt=xxh3:{h.hexdigest()}"
            intr = ""
            if self.intrinsics_path is not None:
                import xxhash

                intr = ":intrinsics=" + xxhash.xxh3_64_hexdigest(Path(self.intrinsics_path).read_bytes())
            self._identity = f"{wid}:level={self.resolution_level}:focal={self.focal}:fov={self.fov}{intr}"
        return self._identity

    @staticmethod
    def _weights_from_registry(path: Path, entry: str = "moge") -> bool:
        try:
            from vd.fetch.registry import model_dir

            return Path(path).resolve().parent == model_dir(entry).resolve()
        except Exception:
            return False

    def _load(self):
        if self._model is None:
            path = self.weights_path()
            with console.status(f"loading MoGe-2 {self.model} on {self.device}"):
                self._model = load_moge(path, self.device, self.entry)
        return self._model

    def known_K(self, width: int, height: int, *, plan=None) -> Optional[np.ndarray]:
        """The working image's K when the camera is given (--focal, --fov, an intrinsics JSON), without
        running the model; None when MoGe would estimate it."""
        same = plan is not None and tuple(plan.size) == (width, height)
        iplan = plan if same else plan_to(width, height, width, height)
        return resolve_K(width, height, iplan, focal=self.focal, fov=self.fov, intr=self._intr)

    def estimate(self, rgb, K_hint=None, *, plan=None) -> DepthResult:
        """Depth for `rgb`. A known camera (K_hint in working pixels, else --focal in original-image
        pixels via `plan`, --fov, or an intrinsics JSON) fixes MoGe's FoV; otherwise MoGe estimates it."""
        import torch

        rgb = check_rgb(rgb)
        H, W = rgb.shape[:2]
        iplan = plan if (plan is not None and tuple(plan.size) == (W, H)) else plan_to(W, H, W, H)
        K_known = resolve_K(W, H, iplan, K_hint=K_hint, focal=self.focal, fov=self.fov, intr=self._intr)
        model = self._load()
        dev = next(model.parameters()).device
        view = None if K_known is None else centred_view(K_known, W, H)
        fov_x = None if view is None else view.fov_x_deg
        src = rgb if view is None or view.identity else view.to_centred(rgb)
        image = torch.from_numpy(np.array(src)).to(dev).permute(2, 0, 1).float().div_(255.0)

        with warnings.catch_warnings():
            # MoGe opens a float32 CPU autocast region that torch reports as unsupported (harmless)
            warnings.filterwarnings("ignore", message=".*CPU autocast.*|.*In CPU autocast.*")
            out = model.infer(
                image,
                resolution_level=self.resolution_level,
                fov_x=fov_x,
                use_fp16=dev.type == "cuda",
                apply_mask=True,
            )
        depth = out["depth"].float().cpu().numpy()
        mask = out["mask"].cpu().numpy().astype(bool) if "mask" in out else np.ones((H, W), bool)
        normals = out["normal"].float().cpu().numpy().astype(np.float32) if "normal" in out else None
        if view is not None and not view.identity:  # back to the given camera's pixels (same rays, same z)
            depth, mask, normals = (
                view.from_centred(depth),
                view.from_centred(mask),
                (None if normals is None else view.from_centred(normals)),
            )
        valid = mask & np.isfinite(depth) & (depth > 0)
        depth = np.where(valid, depth, 0).astype(np.float32)
        Kn = out["intrinsics"].float().cpu().numpy().astype(np.float64)  # normalised (uv in [0,1])
        K = np.array([[Kn[0, 0] * W, 0, Kn[0, 2] * W], [0, Kn[1, 1] * H, Kn[1, 2] * H], [0, 0, 1]], dtype=np.float32)
        if K_known is not None:
            K = np.asarray(K_known, dtype=np.float32)
        if normals is not None:
            normals[~valid] = 0
        return DepthResult(depth=depth, K=K, valid=valid, normals=normals)

    def release(self) -> None:
        if self._model is not None:
            self._model = None
            release_torch_memory()


__all__ = [
    "MogeDepth",
    "load_moge",
    "import_moge_model",
    "registry_model",
    "MOGE_INSTALL",
    "MOGE_REGISTRY",
]
