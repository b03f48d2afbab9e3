"""The fine stage: multi-view consistency sampling (MCS) of the coarse scene.

VistaDream refines the coarse Gaussian scene by running the last `steps` of a diffusion schedule
on several views at once and, at each step, fitting a copy of the coarse scene to every view's
current clean prediction plus the anchor views, then steering the sampler towards the re-rendered
scene (docs/upstream.md#mcs-fine-stage). The flow-matching form of that steering is derived in `vd.mcs`; this
module wires it to a `vd.stages.denoisers.Denoiser`, the renderer and the optimiser.

    runner = prepare_fine(FineParams(...), RunOptions(...), FluxParams(...))   # the denoiser chosen once
    runner.run(coarse_dir, out_dir, image=..., viewer=viewer) -> FineResult  # `vd fine` and `vd batch`
    run_fine(coarse_dir, out_dir, FineParams(...), denoiser_factory=..., device=...) -> FineResult

1. Views: `vd.stages.fine_views.select_views` (memoised on its own).
2. Start (`MCSLoop.prepare`): the coarse renders are encoded and noised to the start time of the
   last `steps` of the `total_steps` schedule; the denoiser is conditioned on each render with its
   hole mask (`vd.holes.hole_masks`) as the region to generate.
3. Each step (`MCSLoop.step`), batched over views: velocity -> clean estimate -> decode; fit a
   fresh copy of the coarse scene to the decoded estimates plus the anchor views for `gs_iters`
   (`rectify`); re-render; encode; blend velocities (`vd.mcs.rectified_step`); step. Every step
   is memoised (`step_key(stage_key, "step", k)`), so a killed run resumes at the next step.
4. Final (`MCSLoop.finish`): the clean latent at t = 0 is decoded and the coarse scene fitted once
   more to it (VistaDream 2026 ends with one extra optimisation too), and the pinholes a move opens
   in that fit are sealed as the coarse scene's are (`vd.stages.coarse_view.seal_moves`): that is `fine.ply`.

Each anchor view supervises exactly the pixels it supervised in `vd coarse` (its `supervise`
mask: every pixel of the input, the generated pixels of the ring); the refined views supervise
all their pixels.

Outputs: fine.ply, steps/step_NN.png (per view: clean estimate above the rectified render),
steps/final.png, summary.json (views, one row per step with losses and timings, VRAM).

Known limit (as upstream): a rectification optimises a copy of the coarse scene without
densification, so pixels no coarse Gaussian covers stay holes in the renders and in fine.ply.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from vd import console, mcs
from vd.cache import Cache, codecs, stage_key, step_key
from vd.cameras import invert_pose
from vd.fetch.licences import licences_of
from vd.fsio import atomic_write_bytes
from vd.gaussians import Gaussians
from vd.holes import hole_masks
from vd.models import memory
from vd.params import FINE_GS_ITERS, FineParams, FluxParams, RunOptions, key_params
from vd.ply import encode_ply, read_ply
from vd.render import resolve_backend
from vd.stages.coarse_folder import CoarseScene, read_coarse_folder
from vd.stages.coarse_view import seal_moves
from vd.stages.denoisers import Denoiser, choose_denoiser
from vd.stages.fine_views import FinePose, fine_frame, render_views, select_views
from vd.stages.runner import NULL_VIEWER, StageViewer
from vd.train import MAX_OPACITY, TrainView, optimise
from vd.viewer import Viewer
from vd.views import pixel_footprint

log = logging.getLogger(__name__)

STAGE = "fine"
VIEWS_STAGE = "fine-views"  # the choice of views, memoised on its own
VERSION = 9  # 2: anchors supervise their recorded supervision masks (was: the input's spawn mask); 3: depth term;
# 4: coverage term (--alpha-weight); 5: the final fit's pinholes sealed (vd.stages.coarse_view.seal_moves);
# 6: far Gaussians keep their normal (vd.train.FIXED_ORIENTATION_BEYOND); 7: the seal probes turns too, and
# tests what it keeps by blend weights first (vd.unseen); 8: it seals cracks at depth jumps with the farther side
# and backs what shows through a surface (vd.pinholes.leaks); 9: the positions' rate in pixels (FineParams.lr_means),
# opacities at most vd.train.MAX_OPACITY
VIEWS_VERSION = 4  # 4: keyed by every selection parameter (key_params), apart from the MCS loop's version


@dataclass
class FineResult:
    out_dir: Path
    ply: Path
    summary_path: Path
    strips: list[Path]
    summary: dict
    cached_steps: int = 0

    def to_json(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "ply": str(self.ply),
            "summary": str(self.summary_path),
            "strips": [str(p) for p in self.strips],
            "steps": len(self.summary.get("steps", [])),
            "cached_steps": self.cached_steps,
            "views": len(self.summary.get("views", [])),
            "seconds": self.summary.get("timings", {}).get("total_s"),
            "peak_vram_bytes": self.summary.get("vram", {}).get("peak_bytes"),
        }


# ---------------------------------------------------------------------------------------------
# rectification: fit the coarse scene to the anchors and the current images


def rectification_targets(scene: CoarseScene, images, poses, K, device, depth: bool = False) -> list:
    """The optimiser's targets: each anchor view over its supervised pixels (with `depth`, also its
    depth where it spawned), repeated so that the anchors get about half of the steps (VistaDream
    2026 alternates one anchor step and one view step), then the refined views over all their pixels."""
    import torch

    reps = max(1, int(round(len(images) / max(len(scene.anchors), 1))))
    targets = [v.train_view(device, depth=depth) for v in scene.anchors for _ in range(reps)]
    Kt = torch.as_tensor(np.asarray(K, np.float32), device=device)
    for i in range(len(images)):
        img = images[i].float().to(device)
        targets.append(
            TrainView(
                rgb=img,
                mask=torch.ones(img.shape[:2], dtype=torch.bool, device=device),
                K=Kt,
                camera_from_world=torch.as_tensor(invert_pose(poses[i]).astype(np.float32), device=device),
            )
        )
    return targets


def rectify(
    scene: CoarseScene,
    images,
    poses,
    K,
    *,
    iters: int,
    seed: int,
    backend: str,
    device,
    depth_weight: float = 0.0,
    alpha_weight: float = 0.0,
    lr_means: Optional[float] = None,
    progress: Optional[Callable[[int, float], None]] = None,
):
    """Fit a fresh copy of the coarse scene to the anchors plus `images` at `poses` (and, weighted by
    `depth_weight`, to the anchors' depth, so the fit keeps the geometry; weighted by `alpha_weight`,
    `vd.train.coverage_loss` over every target's supervised pixels: no pinholes); (g, losses).
    `lr_means`: the positions' learning rate in scene units (None: `vd.train`'s; 0: the positions stay).
    `progress(iteration, loss)`: `vd.train.optimise`'s, over the fit's 2 × `iters` iterations."""

    g = scene.gaussians.clone().to(device)
    if iters <= 0:
        return g, []
    # one iteration = one anchor step and one view step on average (see rectification_targets)
    rep = optimise(
        g,
        rectification_targets(scene, images, poses, K, device, depth=depth_weight > 0),
        2 * int(iters),
        seed=int(seed),
        backend=backend,
        depth_weight=depth_weight,
        alpha_weight=alpha_weight,
        lrs=None if lr_means is None else {"means": float(lr_means)},
        progress=progress,
        max_opacity=MAX_OPACITY,
    )
    return g.detach(), [float(x) for x in rep.losses]


def _tail_mean(losses: list) -> Optional[float]:
    """Mean of the last tenth of a loss history (single-view steps are noisy); None when empty."""
    if not losses:
        return None
    n = max(1, len(losses) // 10)
    return float(np.mean(losses[-n:]))


def to_uint8(rgb) -> np.ndarray:
    a = rgb.detach().float().cpu().numpy() if hasattr(rgb, "detach") else np.asarray(rgb, dtype=np.float32)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def strip(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Views side by side: `top` [B,H,W,3] above `bottom` (uint8)."""
    return np.concatenate([np.concatenate(list(top), axis=1), np.concatenate(list(bottom), axis=1)], axis=0)


# ---------------------------------------------------------------------------------------------
# the sampler


class MCSLoop:
    """MCS over the chosen views: `prepare` once (lazily: only a step that is not cached needs the
    model), then `step(k)` for each step, `resume(record)` for a cached one, and `finish`."""

    def __init__(
        self,
        scene: CoarseScene,
        poses: np.ndarray,
        K: np.ndarray,
        size: tuple[int, int],
        params: FineParams,
        denoiser: Denoiser,
        render_backend: str,
        device,
    ):
        self.scene, self.poses, self.K, (self.W, self.H) = scene, poses, K, size
        self.params, self.denoiser, self.backend, self.device = params, denoiser, render_backend, device
        if params.gs_iters is None:
            raise ValueError("the scene-fit iterations are not decided: pass FineParams.resolved(device)")
        self.fit_iters: int = params.gs_iters
        self.lr_means = params.lr_means * pixel_footprint(scene.anchors)  # in the scene's units
        self.sched = [float(s) for s in denoiser.schedule(params.total_steps, self.H, self.W)]
        if len(self.sched) != params.total_steps + 1 or abs(self.sched[-1]) > 0:
            raise RuntimeError(f"the {denoiser.name} schedule must have {params.total_steps + 1} points ending at 0")
        self.start = mcs.start_index(params.total_steps, params.steps)
        self.x: Any = None  # the current latents (a torch.Tensor once prepared or resumed)
        self.state: dict = {}  # the current renders and holes (what the classical denoiser inpaints)
        self.prepared = False
        self.prepare_s = 0.0

    def times(self, k: int) -> tuple[float, float]:
        return self.sched[self.start + k], self.sched[self.start + k + 1]

    def prepare(self) -> None:
        """Render the coarse scene at every view, condition the denoiser on it and, when not
        resumed, start from the encoded renders noised to the first time."""
        import torch

        if self.prepared:
            return
        t = time.perf_counter()
        rgb0, _, alpha0 = render_views(
            self.scene.gaussians.to(self.device), self.poses, self.K, self.W, self.H, backend=self.backend
        )
        holes0 = hole_masks(alpha0).cpu()
        self.denoiser.prepare(rgb0, holes0)
        if self.x is None:
            self.state = {"render_rgb": to_uint8(rgb0), "render_holes": holes0.numpy()}
            z = self.denoiser.encode(rgb0)
            gen = torch.Generator(device="cpu").manual_seed(int(self.params.seed))
            noise = torch.randn(z.shape, generator=gen, dtype=torch.float32).to(z.device, z.dtype)
            self.x = mcs.add_noise(z, noise, self.sched[self.start])
        self.prepare_s += time.perf_counter() - t
        self.prepared = True

    def resume(self, record) -> tuple[dict, bytes]:
        """Take the state a step's record holds; returns (its summary row, its strip PNG)."""
        import torch

        arrays = codecs.decode_tensors(record.read("state.safetensors"))
        self.x = torch.from_numpy(arrays["x"]).to(self.device)
        self.state = {"render_rgb": arrays["render_rgb"], "render_holes": arrays["render_holes"].astype(bool)}
        return codecs.decode_json(record.read("step.json")), record.read("strip.png")

    def step(self, k: int, progress: Optional[Callable[[int, float], None]] = None) -> dict[str, bytes]:
        """One MCS step -> cache artifacts (state.safetensors, step.json, strip.png); `progress` is its scene
        fit's (`rectify`)."""
        import torch

        self.prepare()
        t, t_next = self.times(k)
        p, tm = self.params, {}
        t0 = time.perf_counter()
        with torch.no_grad():
            v = self.denoiser.velocity(self.x, t, self.state)
            imgs = self.denoiser.decode(mcs.predict_x0(self.x.float(), v.float(), t)).float()
        tm["model_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        g, losses = rectify(
            self.scene,
            imgs,
            self.poses,
            self.K,
            iters=self.fit_iters,
            seed=p.seed + k,
            backend=self.backend,
            device=self.device,
            depth_weight=p.depth_weight,
            alpha_weight=p.alpha_weight,
            lr_means=self.lr_means,
            progress=progress,
        )
        tm["rectify_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rgb, _, alpha = render_views(g, self.poses, self.K, self.W, self.H, backend=self.backend)
        with torch.no_grad():
            x_next, stats = mcs.rectified_step(
                self.x, v, self.denoiser.encode(rgb), t, t_next, p.rect_weight, rescale=p.rescale
            )
        tm["render_encode_s"] = time.perf_counter() - t0
        render_u8, est_u8 = to_uint8(rgb), to_uint8(imgs)
        holes = hole_masks(alpha).cpu().numpy()
        row = {
            "step": k,
            "t": round(t, 6),
            "t_next": round(t_next, 6),
            "gs_loss_first": losses[0] if losses else None,
            "gs_loss_final": _tail_mean(losses),
            "render_vs_estimate_l1": float(
                np.abs(render_u8.astype(np.float32) - est_u8.astype(np.float32)).mean() / 255.0
            ),
            "hole_ratio": float(holes.mean()),
            "rescale": [round(r, 6) for r in stats["rescale"]] if stats["rescale"] is not None else None,
            "norm_v": [round(n, 4) for n in stats["norm_v"]],
            "norm_v_implied": [round(n, 4) for n in stats["norm_v_implied"]]
            if stats["norm_v_implied"] is not None
            else None,
            **{name: round(sec, 3) for name, sec in tm.items()},
        }
        arrays = {"x": x_next.detach().float().cpu(), "render_rgb": render_u8, "render_holes": holes.astype(np.uint8)}
        return {
            "state.safetensors": codecs.encode_tensors(arrays),
            "step.json": codecs.encode_json(row),
            "strip.png": codecs.encode_png(strip(est_u8, render_u8)),
        }

    def finish(self, key: str, progress: Optional[Callable[[int, float], None]] = None) -> dict[str, bytes]:
        """Decode the final latents and fit the coarse scene to them once more: fine.ply."""
        self.prepare()
        tf = time.perf_counter()
        imgs = self.denoiser.decode(self.x.to(self.device)).float()
        g, losses = rectify(
            self.scene,
            imgs,
            self.poses,
            self.K,
            iters=self.fit_iters,
            seed=self.params.seed + 10_000,
            backend=self.backend,
            device=self.device,
            depth_weight=self.params.depth_weight,
            alpha_weight=self.params.alpha_weight,
            lr_means=self.lr_means,
            progress=progress,
        )
        # the fit shrinks Gaussians along the axes its views foreshorten, as the coarse stage's does
        g = Gaussians.cat([g, seal_moves(g, self.scene.views, self.backend)])
        rgb, _, _ = render_views(g, self.poses, self.K, self.W, self.H, backend=self.backend)
        ply, rep = encode_ply(g.to("cpu"), comments={"vd_stage": "fine", "vd_fine_key": key})
        info = {
            "gs_loss_first": losses[0] if losses else None,
            "gs_loss_final": _tail_mean(losses),
            "gaussians": rep.written,
            "seconds": round(time.perf_counter() - tf, 3),
        }
        return {
            "fine.ply": ply,
            "strip.png": codecs.encode_png(strip(to_uint8(imgs), to_uint8(rgb))),
            "final.json": codecs.encode_json(info),
        }


# ---------------------------------------------------------------------------------------------
# the run


def views_key(scene: CoarseScene, params: FineParams, K, size: tuple[int, int], render_backend: str) -> str:
    """The key of the choice of views: the scene, the refined frame, every parameter the choice depends on."""
    W, H = size
    return stage_key(
        stage=VIEWS_STAGE,
        version=VIEWS_VERSION,
        inputs=scene.inputs,
        backend=render_backend,
        params={**key_params(params, VIEWS_STAGE), "frame": [W, H], "K": np.round(K, 6).tolist()},
    )


def fine_key(
    scene: CoarseScene,
    params: FineParams,
    K,
    size: tuple[int, int],
    poses: np.ndarray,
    *,
    denoiser_id: str,
    dtype: str,
    render_backend: str,
) -> str:
    """The key of the MCS loop (its steps and final fit key from it): the scene, the views, the
    denoiser, every parameter the loop depends on (`FineParams.key_params`), the renderer and the seed."""
    W, H = size
    return stage_key(
        stage=STAGE,
        version=VERSION,
        params={
            **params.key_params(),
            "frame": [W, H],
            "K": np.round(K, 6).tolist(),
            "poses": np.round(poses, 8).tolist(),
        },
        inputs=scene.inputs,
        models={"denoiser": denoiser_id},
        backend=render_backend,
        dtype=dtype,
        seed=int(params.seed),
    )


def choose_poses(
    scene: CoarseScene,
    params: FineParams,
    K,
    size: tuple[int, int],
    *,
    cache: Cache,
    render_backend: str,
    device,
    image: Optional[str],
) -> list[FinePose]:
    """The refined views' poses, memoised on their own (they depend on the scene and the selection parameters only)."""
    W, H = size

    def compute():
        with console.status("fine: choosing views"):
            sel = select_views(
                scene,
                params.views,
                K,
                W,
                H,
                stride=params.candidate_stride,
                scale=params.select_scale,
                backend=render_backend,
                device=device,
            )
        return {"views.json": codecs.encode_json([v.to_json() for v in sel])}

    rec, _ = cache.memoise(
        views_key(scene, params, K, size, render_backend), compute, stage=STAGE, image=image, meta={"step": "views"}
    )
    poses = [
        FinePose(
            d["index"], d["name"], np.asarray(d["world_from_camera"], dtype=np.float64), d["hole_ratio"], d["source"]
        )
        for d in codecs.decode_json(rec.read("views.json"))
    ]
    if len(poses) < params.views:
        log.warning(
            f"only {len(poses)} candidate poses are available; refining {len(poses)} views instead of {params.views}"
        )
    return poses


@dataclass(frozen=True)
class FineRunner:
    """`vd fine` over any number of coarse folders, the parameters checked and the denoiser chosen
    once (`prepare_fine`); `vd fine` and `vd batch` both run it."""

    params: FineParams
    device: str
    denoiser_factory: Callable[[], Denoiser]

    def run(
        self,
        coarse_dir: Path,
        out_dir: Path,
        *,
        image: Optional[str] = None,
        viewer: Viewer = NULL_VIEWER,
        cache: Optional[Cache] = None,
        label: Optional[str] = None,
    ) -> FineResult:
        """`run_fine` on one coarse folder, its memory tracked as "fine <label>" (default: the folder's name)."""
        with memory.track(f"fine {label or Path(coarse_dir).name}", device=self.device):
            return run_fine(
                coarse_dir,
                out_dir,
                self.params,
                denoiser_factory=self.denoiser_factory,
                device=self.device,
                cache=cache,
                image=image,
                viewer=viewer,
            )


def prepare_fine(params: FineParams, options: RunOptions, flux: FluxParams) -> FineRunner:
    """Check the parameters and choose the denoiser (`options.inpaint_backend`, `allow_classical`,
    `device`, `fetch`, `licence`; flux's offload and VRAM budget) before any work: UsageError (exit 2) or
    MissingWeightsError (exit 3) here, not after the first folder. The seed and renderer are the
    FineParams' own."""
    params.validate()
    flux.validate()
    options.validate()
    dev, factory, _ = choose_denoiser(
        options.inpaint_backend,
        device=options.device,
        offload=flux.offload,
        vram_budget=flux.budget_bytes,
        allow_classical=options.allow_classical,
        guidance=params.guidance,
        auto_fetch=options.auto_fetch,
        quant=flux.quant,
        licence=options.licence,
    )
    if params.gs_iters is None and not str(dev).startswith("cuda"):
        log.info(
            f"CPU run: using {FINE_GS_ITERS['cpu']} iterations for each scene fit (the GPU default is "
            f"{FINE_GS_ITERS['gpu']}; set --gs-iters to override)"
        )
    return FineRunner(params=params.resolved(str(dev)), device=str(dev), denoiser_factory=factory)


def run_fine(
    coarse_dir: Path,
    out_dir: Path,
    params: FineParams,
    *,
    denoiser_factory: Callable[[], Denoiser],
    device: str = "cpu",
    cache: Optional[Cache] = None,
    image: Optional[str] = None,
    viewer: Viewer = NULL_VIEWER,
) -> FineResult:
    """Run MCS on the coarse scene in `coarse_dir`; write fine.ply, steps/, summary.json to `out_dir`.
    `viewer` (NullViewer by default) is shown every step's renders and the result; its failures
    never fail the run (`vd.stages.runner.StageViewer`)."""
    import torch

    params.validate()
    params = params.resolved(device)
    show = StageViewer(viewer)
    out_dir = Path(out_dir)
    t_all = time.perf_counter()
    cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    scene = read_coarse_folder(coarse_dir)
    if image is None and isinstance(scene.summary.get("image"), str):
        image = scene.summary["image"]  # cache records name their source image (vd export IMAGE finds them)
    inp = scene.input_view
    K, W, H = fine_frame(inp.K, inp.width, inp.height, params.margin)
    cache = cache or Cache.open()
    render_backend = str(resolve_backend(params.render_backend, device))
    t0 = time.perf_counter()
    views = choose_poses(
        scene, params, K, (W, H), cache=cache, render_backend=render_backend, device=device, image=image
    )
    timings = {"select_s": round(time.perf_counter() - t0, 3)}
    poses = np.stack([v.world_from_camera for v in views])
    denoiser = denoiser_factory()
    key = fine_key(
        scene,
        params,
        K,
        (W, H),
        poses,
        denoiser_id=denoiser.identity,
        dtype=denoiser.dtype,
        render_backend=render_backend,
    )
    show.set_tab("fine")
    loop = MCSLoop(scene, poses, K, (W, H), params, denoiser, render_backend, device)
    try:
        rows, strips, cached = _run_steps(loop, key, cache, image, show)
        with console.Bar("fine: final scene fit", 2 * loop.fit_iters) as bar:
            frec, fhit = cache.memoise(
                step_key(key, "final"),
                partial(loop.finish, key, progress=lambda iteration, _: bar.update(iteration + 1)),
                stage=STAGE,
                image=image,
                meta={"step": "final"},
            )
    finally:
        denoiser.release()
    final_info = codecs.decode_json(frec.read("final.json"))
    final_info["cached"] = bool(fhit)
    ply_path, strip_paths = _write_outputs(out_dir, strips, frec)
    fine_g, _ = read_ply(ply_path)
    if loop.prepare_s:
        timings["prepare_s"] = round(loop.prepare_s, 3)
    timings["total_s"] = round(time.perf_counter() - t_all, 3)
    summary = {
        "stage": STAGE,
        "version": VERSION,
        "key": key,
        "coarse": str(Path(coarse_dir).resolve()),
        "denoiser": {"name": denoiser.name, "identity": denoiser.identity, "dtype": denoiser.dtype},
        "licences": licences_of(denoiser.registry_models),
        "memory_plan": getattr(getattr(denoiser, "backend", None), "placement", None),
        "render_backend": render_backend,
        "device": str(device),
        "params": asdict(params),
        "frame": {"width": W, "height": H, "K": np.asarray(K).round(6).tolist()},
        "schedule": [round(s, 6) for s in loop.sched],
        "start_index": loop.start,
        "views": [v.to_json() for v in views],
        "steps": rows,
        "final": final_info,
        "gaussians": {"coarse": len(scene.gaussians), "fine": len(fine_g)},
        "timings": timings,
        "vram": {"peak_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None},
        "outputs": {"ply": "fine.ply", "strips": [str(p.relative_to(out_dir)) for p in strip_paths]},
    }
    summary_path = atomic_write_bytes(out_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    show.log_gaussians("fine", fine_g)
    return FineResult(out_dir, ply_path, summary_path, strip_paths, summary, cached)


def _run_steps(
    loop: MCSLoop, key: str, cache: Cache, image: Optional[str], viewer: StageViewer
) -> tuple[list[dict], list[bytes], int]:
    """Every step, memoised, with a bar of the steps and one of each step's scene fit; returns (summary
    rows, strip PNGs, cached steps)."""
    rows, strips, cached = [], [], 0
    n = loop.params.steps
    with console.Bar("fine: MCS steps", n) as steps:
        for k in range(n):
            row, png, hit = _run_step(loop, k, key, cache, image, steps)
            rows.append(row)
            strips.append(png)
            cached += int(hit)
            rgb = loop.state["render_rgb"]
            for i in range(len(rgb)):
                viewer.log_frame(
                    f"fine/view_{i:03d}", K=loop.K, world_from_camera=loop.poses[i], rgb=rgb[i], tab="fine"
                )
    return rows, strips, cached


def _run_step(loop: MCSLoop, k: int, key: str, cache: Cache, image: Optional[str], steps: console.Bar):
    """Step k, memoised and logged: (its summary row, its strip PNG, whether the cache served it). A step
    that is computed shows the bar of the steps and one of its scene fit."""
    n = loop.params.steps
    t, t_next = loop.times(k)
    ts = time.perf_counter()
    with console.Bar(f"fine: step {k + 1}/{n}, scene fit", 2 * loop.fit_iters) as fit:

        def compute():
            steps.update(k)
            return loop.step(k, progress=lambda iteration, _: fit.update(iteration + 1))

        rec, hit = cache.memoise(step_key(key, "step", k), compute, stage=STAGE, image=image, meta={"step": k, "t": t})
    if not hit:
        steps.update(k + 1)
    row, png = loop.resume(rec)
    row.update(cached=bool(hit), wall_s=round(time.perf_counter() - ts, 3))
    log.info(
        f"fine: step {k + 1}/{n} t {t:.3f} -> {t_next:.3f}"
        + (" (cached)" if hit else f", GS loss {row.get('gs_loss_final') or 0:.4f}, {row['wall_s']:.1f} s")
    )
    return row, png, hit


def _write_outputs(out_dir: Path, strips: list[bytes], final_record) -> tuple[Path, list[Path]]:
    """steps/step_NN.png, steps/final.png and fine.ply, each atomically; stale strips of an earlier,
    longer run are removed."""
    (out_dir / "steps").mkdir(parents=True, exist_ok=True)
    names = [f"step_{k:02d}.png" for k in range(len(strips))]
    for stale in (out_dir / "steps").glob("step_*.png"):
        if stale.name not in names:
            stale.unlink()
    paths = [atomic_write_bytes(out_dir / "steps" / n, png) for n, png in zip(names, strips, strict=False)]
    paths.append(atomic_write_bytes(out_dir / "steps" / "final.png", final_record.read("strip.png")))
    return atomic_write_bytes(out_dir / "fine.ply", final_record.read("fine.ply")), paths


__all__ = [
    "FineParams",
    "FineResult",
    "FineRunner",
    "MCSLoop",
    "prepare_fine",
    "run_fine",
    "rectify",
    "rectification_targets",
    "choose_poses",
    "fine_key",
    "views_key",
    "STAGE",
    "VERSION",
    "VIEWS_STAGE",
    "VIEWS_VERSION",
]
