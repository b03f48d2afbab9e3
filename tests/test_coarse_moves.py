"""Views after the trajectory's at the probe moves that still uncover pixels (vd.stages.coarse_view.add_move_view)."""

from types import SimpleNamespace

import numpy as np

from vd.lift import gaussians_from_rgbd
from vd.models.choose import get_inpaint_backend
from vd.params import CoarseParams
from vd.stages.coarse_view import LoopContext, add_move_view, move_poses, uncovered_shares
from vd.views import View, decode_record

W, H, F = 64, 48, 40.0
K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]], np.float32)


class _DepthOfTheRender:
    """No depth model: a new view's depth is the rendered depth carried into its holes (as the `file` backend)."""

    estimates_novel_views = False


def _wall(half_width: float):
    """(input view, Gaussians) of a textured wall 4 m away, `half_width` metres to either side and above and
    below the camera's axis."""
    v, u = np.mgrid[0:H, 0:W]
    rgb = np.stack([(u * 4) % 256, (v * 5) % 256, np.full_like(u, 128)], -1).astype(np.uint8)
    depth = np.full((H, W), 4.0, np.float32)
    view = View("input", "input", rgb, depth, K, np.eye(4), np.ones((H, W), bool), spawn=depth > 0)
    # a wall as wide as asked, lifted from a wider virtual photo with the same pixel spacing
    scale = max(1, int(np.ceil(half_width / (W / 2 / F * 4.0))))
    Kw = K.copy()
    Kw[0, 2], Kw[1, 2] = W * scale / 2, H * scale / 2
    big = np.tile(rgb, (scale, scale, 1))
    g = gaussians_from_rgbd(big, np.full((H * scale, W * scale), 4.0, np.float32), Kw, opacity=0.99)
    return view, g


def _decode(files: dict):
    """What the cache hands back for the files `encode_record` wrote."""
    return decode_record(SimpleNamespace(read=files.__getitem__, names=list(files)))


def _context():
    return LoopContext(
        poses=np.zeros((0, 4, 4)),
        p=CoarseParams(),
        depth_backend=_DepthOfTheRender(),
        inpaint_backend=get_inpaint_backend("telea"),
        render_backend="torch",
        device="cpu",
        view_iters=0,
    )


def test_the_move_that_uncovers_the_most_gets_a_view_and_is_then_covered():
    view, g = _wall(half_width=1.6)  # the photo's own frame: every move but forward uncovers its border
    poses = move_poses([view])
    before = uncovered_shares(g, [view], poses, "torch")
    assert before.max() > 0.01
    record, meta = add_move_view(g, [view], 1, _context(), seed=0)
    assert not meta["stopped"]
    views, new_g, rec_meta = _decode(record)
    best = rec_meta["stat"]["move"]
    assert best == int(np.argmax(before))
    assert rec_meta["stat"]["dense_index"] == -1 and len(views) == 1 and len(new_g) > 0
    from vd.gaussians import Gaussians

    after = uncovered_shares(Gaussians.cat([g, new_g]), [view], poses, "torch")
    assert after[best] < 0.1 * before[best]


def test_no_view_is_added_where_every_move_is_covered():
    view, g = _wall(half_width=8.0)  # far wider than any move of 15 % of 4 m sees
    assert uncovered_shares(g, [view], move_poses([view]), "torch").max() == 0.0
    record, meta = add_move_view(g, [view], 1, _context(), seed=0)
    assert meta["stopped"]
    views, new_g, _ = _decode(record)
    assert views == [] and (new_g is None or len(new_g) == 0)


def test_the_number_of_move_views_keys_the_run_but_not_the_trajectorys_views():
    from vd.stages.coarse import run_key, view_key

    poses = np.repeat(np.eye(4)[None], 3, axis=0)
    three, none = CoarseParams(), CoarseParams(move_views=0)
    assert view_key("scaffold", 1, three, poses) == view_key("scaffold", 1, none, poses)  # cached views are reused
    assert run_key("scaffold", three, None) != run_key("scaffold", none, None)  # the folder is not


def test_a_new_seal_version_keys_a_new_run_folder(monkeypatch):
    """The folder holds the sealed scene: a cached folder from before a change of the seal is not served."""
    import vd.stages.coarse as coarse

    before = coarse.run_key("scaffold", CoarseParams(), None)
    monkeypatch.setattr(coarse, "SEAL_VERSION", coarse.SEAL_VERSION + 1)
    assert coarse.run_key("scaffold", CoarseParams(), None) != before
