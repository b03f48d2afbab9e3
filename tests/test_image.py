"""Image input: orientation, modes, resizing rules and every bad-file case."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vd.errors import InputError, UsageError
from vd.image import load_image, plan_to, resize_plan


def _gradient(w, h):
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    return np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 80.0)], -1).astype(np.uint8)


def test_rgb_roundtrip_no_resize(tmp_path):
    a = _gradient(64, 48)
    p = tmp_path / "a.png"
    Image.fromarray(a).save(p)
    im = load_image(p)
    assert im.rgb.dtype == np.uint8 and im.rgb.shape == (48, 64, 3)
    assert np.array_equal(im.rgb, a)
    assert im.original_size == (64, 48)
    assert len(im.content_hash) == 32


def test_content_hash_depends_on_pixels(tmp_path):
    a = _gradient(64, 48)
    Image.fromarray(a).save(tmp_path / "a.png")
    b = a.copy()
    b[0, 0, 0] ^= 1
    Image.fromarray(b).save(tmp_path / "b.png")
    assert load_image(tmp_path / "a.png").content_hash != load_image(tmp_path / "b.png").content_hash
    # same pixels, different container: same hash (the stages see the same input)
    Image.fromarray(a).save(tmp_path / "a.bmp")
    assert load_image(tmp_path / "a.png").content_hash == load_image(tmp_path / "a.bmp").content_hash


@pytest.mark.parametrize(
    "w,h,cap,expect",
    [
        (4032, 3024, 512, (512, 384)),
        (3024, 4032, 512, (384, 512)),
        (400, 300, 512, (400, 288)),  # small: never upscaled (upstream's 0.5 MP floor gave 832x608)
        (100, 50, 512, (96, 48)),
        (512, 512, 512, (512, 512)),
        (1000, 1000, 500, (496, 496)),
        (1920, 1080, 1024, (1024, 576)),
    ],
)
def test_resize_plan(w, h, cap, expect):
    plan = resize_plan(w, h, cap)
    assert plan.size == expect
    W, H = plan.size
    assert W % 16 == 0 and H % 16 == 0
    assert max(W, H) <= cap
    assert W <= w and H <= h  # never upscaled
    l, t, r, b = plan.crop
    assert 0 <= l < r <= w and 0 <= t < b <= h
    sx, sy = plan.scale
    assert sx <= 1 + 1e-9 and sy <= 1 + 1e-9
    assert abs(sx - sy) / sx < 0.02  # no visible distortion


def test_resize_large_image(tmp_path):
    p = tmp_path / "big.jpg"
    Image.fromarray(_gradient(1000, 700)).save(p, quality=95)
    im = load_image(p, max_resolution=512)
    assert im.rgb.shape == (352, 512, 3)
    assert im.original_size == (1000, 700)
    assert load_image(p, max_resolution=256).rgb.shape == (176, 256, 3)


def test_scale_K_consistent_with_pixels():
    plan = resize_plan(1000, 700, 512)
    K = np.array([[800.0, 0, 500.0], [0, 800.0, 350.0], [0, 0, 1]])
    K2 = plan.scale_K(K)
    # the image centre maps to the working-image centre
    W, H = plan.size
    assert K2[0, 2] == pytest.approx(W / 2, abs=0.6)
    assert K2[1, 2] == pytest.approx(H / 2, abs=0.6)
    assert K2[0, 0] == pytest.approx(800 * plan.scale[0], rel=1e-5)


def test_plan_to_matches_resize_plan_geometry():
    p = resize_plan(4032, 3024, 512)
    q = plan_to(4032, 3024, *p.size)
    assert q.size == p.size
    assert all(abs(a - b) <= 1 for a, b in zip(p.crop, q.crop))


def test_max_resolution_too_small(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(_gradient(64, 48)).save(p)
    with pytest.raises(UsageError):
        load_image(p, max_resolution=8)


def test_exif_rotation(tmp_path):
    a = _gradient(64, 32)  # landscape pixels
    p = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    Image.fromarray(a).save(p, exif=exif, quality=95)
    im = load_image(p)
    assert im.rgb.shape == (64, 32, 3)  # portrait after orientation
    assert im.original_size == (32, 64)
    # orientation 6: the displayed top-left comes from the stored bottom-left
    ref = np.asarray(Image.fromarray(a).transpose(Image.Transpose.ROTATE_270))
    assert np.abs(im.rgb.astype(int) - ref.astype(int)).mean() < 6


def test_rgba_composited_on_white(tmp_path):
    a = np.zeros((32, 32, 4), np.uint8)
    a[..., 0] = 255
    a[:, :16, 3] = 255  # left opaque red, right fully transparent
    p = tmp_path / "rgba.png"
    Image.fromarray(a, "RGBA").save(p)
    im = load_image(p)
    assert im.rgb.shape == (32, 32, 3)
    assert (im.rgb[:, :16] == [255, 0, 0]).all()
    assert (im.rgb[:, 16:] == [255, 255, 255]).all()


def test_la_and_grayscale(tmp_path):
    g = np.tile(np.arange(32, dtype=np.uint8)[None] * 8, (32, 1))
    Image.fromarray(g, "L").save(tmp_path / "l.png")
    im = load_image(tmp_path / "l.png")
    assert im.rgb.shape == (32, 32, 3) and (im.rgb[..., 0] == g).all() and (im.rgb[..., 2] == g).all()
    la = np.stack([g, np.full_like(g, 255)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert np.array_equal(load_image(tmp_path / "la.png").rgb[..., 1], g)


def test_palette(tmp_path):
    a = _gradient(32, 32)
    p = tmp_path / "p.png"
    Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(p)
    im = load_image(p)
    assert im.rgb.shape == (32, 32, 3) and im.rgb.dtype == np.uint8
    assert len(np.unique(im.rgb.reshape(-1, 3), axis=0)) <= 16


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (32, 32), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (0, 0, 16, 32))
    im.info["transparency"] = 1
    p = tmp_path / "pt.png"
    im.save(p, transparency=1)
    out = load_image(p).rgb
    assert (out[:, :16] == 255).all()  # transparent -> white
    assert (out[:, 16:] == [255, 0, 0]).all()


def test_16bit_grayscale(tmp_path):
    g = (np.tile(np.linspace(0, 65535, 32)[None], (32, 1))).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(g).save(p)
    assert Image.open(p).mode.startswith("I")
    im = load_image(p)
    assert im.rgb.dtype == np.uint8 and im.rgb.shape == (32, 32, 3)
    assert im.rgb[0, 0, 0] == 0 and im.rgb[0, -1, 0] == 255
    assert np.all(np.diff(im.rgb[0, :, 0].astype(int)) >= 0)


def test_16bit_rgb_tiff(tmp_path):
    import cv2

    a = (np.random.default_rng(0).random((32, 48, 3)) * 65535).astype(np.uint16)
    p = tmp_path / "rgb16.tif"
    cv2.imwrite(str(p), a[..., ::-1])
    try:
        im = load_image(p)
    except InputError:
        pytest.skip("Pillow cannot read 16-bit RGB TIFF on this build")
    assert im.rgb.shape == (32, 48, 3) and im.rgb.dtype == np.uint8


def test_cmyk(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(p)  # cyan 0, magenta+yellow full -> red
    im = load_image(p)
    assert im.rgb.shape == (32, 32, 3)
    r, g, b = im.rgb[16, 16].astype(int)
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "text", "truncated", "corrupt", "tiny"])
def test_bad_inputs_raise_input_error(tmp_path, kind):
    p = tmp_path / "bad.png"
    buf = io.BytesIO()
    Image.fromarray(_gradient(64, 64)).save(buf, format="PNG")
    good = buf.getvalue()
    if kind == "missing":
        p = tmp_path / "nope.jpg"
    elif kind == "directory":
        p = tmp_path / "dir.png"
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p = tmp_path / "notes.jpg"
        p.write_text("this is not an image\n")
    elif kind == "truncated":
        p.write_bytes(good[: len(good) // 2])
    elif kind == "corrupt":
        bad = bytearray(good)
        for i in range(60, len(bad) - 20, 7):
            bad[i] ^= 0x5A
        p.write_bytes(bytes(bad))
    elif kind == "tiny":
        Image.fromarray(_gradient(8, 8)).save(p)
    with pytest.raises(InputError) as ei:
        load_image(p)
    msg = str(ei.value)
    assert "\n" not in msg and str(p.name) in msg


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_gradient(128, 96)).save(buf, format="JPEG", quality=90)
    p = tmp_path / "t.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(p)


@pytest.mark.parametrize("kind", ["missing", "text", "directory"])
def test_cli_bad_image_one_line_exit_1(tmp_path, run_vd, kind):
    p = tmp_path / "x.png"
    if kind == "text":
        p.write_text("hello")
    elif kind == "directory":
        p.mkdir()
    r = run_vd("depth", p, "-o", tmp_path / "out")
    assert r.code == 1, r
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("w,h,cap", [(4000, 300, 64), (300, 4000, 64), (1000, 20, 512), (5000, 17, 128), (640, 480, 512),
                                     (1920, 1080, 512), (410, 300, 512), (4000, 3000, 64)])
def test_extreme_aspects_keep_square_pixels(w, h, cap):
    """The working image is a centre crop of the original scaled equally in x and y (5f1dd5a
    squeezed a 4000x300 image into 64x16 whole: 3.3x taller pixels)."""
    p = resize_plan(w, h, cap)
    sx, sy = p.scale
    assert abs(sx / sy - 1) < 0.05, (p, sx, sy)
    tw, th = p.size
    assert tw % 16 == 0 and th % 16 == 0 and max(tw, th) <= cap
    assert sx <= 1.0 + 1e-9 and sy <= 1.0 + 1e-9  # never upscaled
    l, t, r, b = p.crop
    assert 0 <= l < r <= w and 0 <= t < b <= h


def test_extreme_aspect_image_loads_uncropped_on_its_short_side(tmp_path):
    from PIL import Image

    src = tmp_path / "wide.png"
    Image.new("RGB", (4000, 300), (10, 20, 30)).save(src)
    img = load_image(src, 64)
    assert img.rgb.shape[:2] == (16, 64)
    assert img.plan.crop == (1400, 0, 2600, 300)
