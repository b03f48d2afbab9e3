"""The stage runners: keys derived from the parameter dataclasses, typed run state, one viewer policy."""

from __future__ import annotations

import ast
import inspect
from dataclasses import fields, make_dataclass, replace
from types import SimpleNamespace

import numpy as np
import pytest

from vd.params import KEYED_APART, CoarseParams, FineParams, param

POSES = np.stack([np.eye(4)] * 3)
K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])


def scaffold_key(p):
    from vd.stages.scaffold import scaffold_key

    return scaffold_key("img", p, depth_id="depth", inpaint_id="inpaint", render_backend="torch", seed=0,
                        max_resolution=512)


def view_key(p):
    from vd.stages.coarse import view_key

    return view_key("scaffold-key", 1, p, POSES)


def run_key(p):
    from vd.stages.coarse import run_key

    return run_key(scaffold_key(p), p, None)


SCENE = SimpleNamespace(inputs={"coarse.ply": "h1", "cameras.json": "h2"})


def fine_key(p):
    from vd.stages.fine import fine_key

    return fine_key(SCENE, p, K, (64, 48), POSES, denoiser_id="telea", dtype="float32", render_backend="torch")


def views_key(p):
    from vd.stages.fine import views_key

    return views_key(SCENE, p, K, (64, 48), "torch")


# (stage name the fields declare, key function, parameters as the runner passes them)
KEYS = [
    ("scaffold", scaffold_key, CoarseParams(init_iters=30, view_iters=60)),
    ("coarse-view", view_key, CoarseParams(init_iters=30, view_iters=60)),
    ("coarse", run_key, CoarseParams(init_iters=30, view_iters=60)),  # the whole run's folder: every field
    ("fine", fine_key, FineParams()),
    ("fine-views", views_key, FineParams()),
]


def other_value(f, value):
    """A different value of the field's type (the keys never validate)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 0.125
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, tuple):
        return tuple(x + 1 for x in value)
    assert value is None, (f.name, value)
    kind = str(f.type)
    return 0.5 if "float" in kind else 7 if "int" in kind else "other"


def declared_outside(f, stage: str) -> bool:
    return stage in f.metadata.get("not_in_keys", ())


def keyed_apart(f) -> bool:
    return f.metadata.get("not_in_keys", ()) == KEYED_APART


@pytest.mark.parametrize("stage, key, base", KEYS, ids=[k[0] for k in KEYS])
def test_every_field_changes_the_key_unless_it_declares_otherwise(stage, key, base):
    ref = key(base)
    assert key(replace(base)) == ref  # deterministic
    for f in fields(base):
        if keyed_apart(f):  # the runner passes it to the key itself (seed, backend) or by content (poses)
            continue
        changed = key(replace(base, **{f.name: other_value(f, getattr(base, f.name))})) != ref
        assert changed != declared_outside(f, stage), (
            f"{type(base).__name__}.{f.name} {'changes' if changed else 'does not change'} the {stage} key")


@pytest.mark.parametrize("stage, key, base", KEYS, ids=[k[0] for k in KEYS])
def test_a_field_added_later_changes_the_key(stage, key, base):
    """Nobody has to remember to add it to a list: a new field is keyed unless it says it is not."""
    Extended = make_dataclass("Extended", [("new_knob", int, param(1, "A knob added later."))], bases=(type(base),))
    a = Extended(**{f.name: getattr(base, f.name) for f in fields(base)}, new_knob=1)
    b = replace(a, new_knob=2)
    assert key(a) != key(b)


def test_fine_key_params_are_the_fields_keyed_under_fine():
    p = FineParams()
    assert set(p.key_params()) == {f.name for f in fields(p) if not declared_outside(f, "fine") and not keyed_apart(f)}
    assert "seed" not in p.key_params() and "render_backend" not in p.key_params()  # keyed apart


def test_the_seed_is_keyed_apart():
    assert fine_key(FineParams(seed=1)) != fine_key(FineParams(seed=2))
    assert views_key(FineParams(seed=1)) == views_key(FineParams(seed=2))  # the choice of views draws nothing


def test_scaffold_key_does_not_depend_on_the_view_loop():
    """Choosing other views (more frames, another band) reuses the scaffold."""
    p = CoarseParams(init_iters=30, view_iters=60)
    assert scaffold_key(p) == scaffold_key(replace(p, n_frames=4, min_ratio=0.1, view_iters=5, traj="rot"))
    assert view_key(p) != view_key(replace(p, n_frames=4))


# --- typed run state -------------------------------------------------------------------------------

def test_coarse_run_declares_every_attribute():
    from vd.stages.coarse import CoarseRun

    names = {f.name for f in fields(CoarseRun)}
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(CoarseRun).parameters.values())
    # every `self.x = ...` in the class assigns a declared field
    tree = ast.parse(inspect.getsource(CoarseRun))
    assigned = {t.attr for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    assert assigned and assigned <= names, assigned - names
    run = object.__new__(CoarseRun)  # slots: an undeclared attribute cannot be created at run time either
    with pytest.raises(AttributeError):
        run.grown_later = 1


# --- one viewer policy ------------------------------------------------------------------------------

class Broken:
    enabled = True

    def __init__(self):
        self.calls = 0

    def log_frame(self, name, **kw):
        self.calls += 1
        raise RuntimeError("viewer went away")

    def log_gaussians(self, entity, g):
        raise OSError("socket closed")


def test_a_failing_viewer_warns_once_per_method_and_never_fails_the_stage(monkeypatch):
    from vd import console
    from vd.stages.runner import StageViewer

    warnings = []
    monkeypatch.setattr(console, "warn", warnings.append)
    v = StageViewer(Broken())
    for _ in range(3):
        v.log_frame("input", K=K, world_from_camera=np.eye(4), rgb=None, tab="scaffold")
        v.log_gaussians("coarse", [])
    v.set_tab("fine")  # a method the viewer lacks is a viewer failure too
    v.show("fly-through", lambda viewer: viewer.log_frame("x"))
    assert v.viewer.calls == 4  # every call was still made
    assert len(warnings) == 4, warnings  # log_frame, log_gaussians, set_tab, fly-through: once each
    assert "log_frame" in warnings[0] and "viewer went away" in warnings[0]


def test_the_stages_take_a_viewer_object_never_none():
    from vd.stages.runner import NULL_VIEWER, StageViewer
    from vd.viewer import NullViewer

    with pytest.raises(TypeError, match="NullViewer"):
        StageViewer(None)
    assert isinstance(NULL_VIEWER, NullViewer) and not StageViewer(NULL_VIEWER).enabled
    from vd.stages.coarse import run_coarse
    from vd.stages.fine import run_fine

    for fn in (run_coarse, run_fine):
        assert inspect.signature(fn).parameters["viewer"].default is NULL_VIEWER


def test_null_viewer_skips_viewer_only_work():
    from vd.stages.runner import NULL_VIEWER, StageViewer

    ran = []
    StageViewer(NULL_VIEWER).show("fly-through", lambda viewer: ran.append(viewer))
    assert ran == []


# --- one runner, called by the CLI and by vd batch alike ----------------------------------------

def test_cli_and_batch_choose_the_denoiser_through_the_same_runner(monkeypatch, tmp_path, run_vd):
    """`vd fine` and `vd batch --stages coarse,fine` both reach vd.stages.fine.prepare_fine."""
    import vd.stages.fine as fine
    from vd.batch import BatchSpec, Job, run_job
    from vd.errors import UsageError

    seen = []

    def prepare(params, options, flux):
        seen.append((type(params).__name__, options.inpaint_backend, flux.offload))
        raise UsageError("stop here")

    monkeypatch.setattr(fine, "prepare_fine", prepare)
    monkeypatch.setattr(fine, "run_fine", None)  # nothing may bypass the runner
    import vd.stages.coarse as coarse

    monkeypatch.setattr(coarse, "run_coarse", lambda *a, **kw: SimpleNamespace(paths=[]))
    from test_fine import make_coarse  # a real coarse folder for the CLI's input checks

    folder = make_coarse(tmp_path / "c", with_views=False)
    r = run_vd("fine", folder, "--inpaint-backend", "telea", "--offload", "none")
    assert r.code == 2 and "stop here" in r.stderr, r
    row = run_job(Job(str(tmp_path / "x.png"), str(folder), {"inpaint_backend": "telea", "offload": "none"}),
                  BatchSpec(stages=("coarse", "fine")))
    assert row["status"] == "failed" and row["error"] == "stop here"
    assert seen == [("FineParams", "telea", "none")] * 2


def test_batch_run_options_are_the_run_options_fields():
    from vd.batch import NOT_IN_BATCH, RUN_OPTIONS
    from vd.params import FluxParams, RunOptions

    run_options = {f.name for f in fields(RunOptions)} - NOT_IN_BATCH
    assert set(RUN_OPTIONS) == run_options | {f.name for f in fields(FluxParams)}
