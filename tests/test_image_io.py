"""Loading every format and mode, the decompression-bomb guard, bad files, and atomic writes."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from conftest import photo_path
from PIL import Image

from pixelkm.image import ImageError, ImageTooLargeError, atomic_write, load_image, save_image
from pixelkm.image._io import as_image


@pytest.fixture(scope="module")
def rgb():
    """kodim23 at a quarter of its size: (128, 192, 3) uint8."""
    with Image.open(photo_path("kodim23.png")) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"))[::4, ::4])


def _alpha_ramp(h: int, w: int) -> np.ndarray:
    a = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
    a[:, : w // 4] = 0  # a fully transparent band
    return a


@pytest.mark.parametrize(
    "suffix,lossless",
    [
        (".png", True),
        (".bmp", True),
        (".tif", True),
        (".webp", True),
        (".jpg", False),
        (".gif", False),
    ],
)
def test_formats_load_as_pillow_decodes_them(rgb, tmp_path, suffix, lossless):
    path = tmp_path / f"photo{suffix}"
    opts = {"lossless": True} if suffix == ".webp" else {}
    Image.fromarray(rgb).save(path, **opts)
    img = load_image(path)
    assert img.pixels.dtype == torch.uint8 and tuple(img.pixels.shape) == rgb.shape
    assert img.alpha is None
    assert img.file_size == path.stat().st_size
    with Image.open(path) as im:  # oracle: Pillow's own decode
        expected = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(img.pixels.numpy(), expected)
    if lossless:
        np.testing.assert_array_equal(img.pixels.numpy(), rgb)


def test_rgba_keeps_alpha(rgb, tmp_path):
    a = _alpha_ramp(*rgb.shape[:2])
    Image.fromarray(np.dstack([rgb, a]), "RGBA").save(tmp_path / "x.png")
    img = load_image(tmp_path / "x.png")
    np.testing.assert_array_equal(img.pixels.numpy(), rgb)
    np.testing.assert_array_equal(img.alpha.numpy(), a)
    np.testing.assert_array_equal(img.opaque.numpy(), a > 0)


def test_la_and_l(rgb, tmp_path):
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    a = _alpha_ramp(*gray.shape)
    Image.fromarray(np.dstack([gray, a]), "LA").save(tmp_path / "la.png")
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    la = load_image(tmp_path / "la.png")
    for ch in range(3):
        np.testing.assert_array_equal(la.pixels[:, :, ch].numpy(), gray)
    np.testing.assert_array_equal(la.alpha.numpy(), a)
    lum = load_image(tmp_path / "l.png")
    assert lum.alpha is None and lum.mode == "L"
    np.testing.assert_array_equal(lum.pixels.numpy(), np.repeat(gray[:, :, None], 3, 2))


def test_palette_with_and_without_transparency(rgb, tmp_path):
    p = Image.fromarray(rgb).quantize(32)
    p.save(tmp_path / "p.png")
    plain = load_image(tmp_path / "p.png")
    assert plain.alpha is None and plain.mode == "P"
    np.testing.assert_array_equal(plain.pixels.numpy(), np.asarray(p.convert("RGB")))
    idx = np.asarray(p)
    t = int(idx[0, 0])
    p.save(tmp_path / "pt.png", transparency=t)
    p.save(tmp_path / "pt.gif", transparency=t)
    for name in ("pt.png", "pt.gif"):
        img = load_image(tmp_path / name)
        np.testing.assert_array_equal(img.alpha.numpy(), np.where(idx == t, 0, 255))
        np.testing.assert_array_equal(img.pixels.numpy()[idx != t], np.asarray(p.convert("RGB"))[idx != t])


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_is_scaled(tmp_path, suffix):
    v = np.arange(0, 65536, 16, dtype=np.uint16)[:4096].reshape(64, 64)
    Image.fromarray(v).save(tmp_path / f"g{suffix}")
    img = load_image(tmp_path / f"g{suffix}")
    assert img.mode.startswith("I")
    expected = np.rint(v / 257.0).astype(np.uint8)  # hand computation: 65535 -> 255
    np.testing.assert_array_equal(img.pixels[:, :, 0].numpy(), expected)
    np.testing.assert_array_equal(img.pixels[:, :, 2].numpy(), expected)


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk(rgb, tmp_path, suffix):
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / f"c{suffix}")
    img = load_image(tmp_path / f"c{suffix}")
    assert img.mode == "CMYK" and img.alpha is None
    with Image.open(tmp_path / f"c{suffix}") as im:
        np.testing.assert_array_equal(img.pixels.numpy(), np.asarray(im.convert("RGB")))


def test_bilevel(tmp_path):
    bits = (np.indices((20, 30)).sum(0) % 2).astype(bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    img = load_image(tmp_path / "b.png")
    np.testing.assert_array_equal(img.pixels[:, :, 1].numpy(), np.where(bits, 255, 0))


@pytest.mark.parametrize("orientation,turns", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(rgb, tmp_path, orientation, turns):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(tmp_path / "o.png", exif=exif)
    img = load_image(tmp_path / "o.png")
    with Image.open(tmp_path / "o.png") as im:  # a PIL image given directly is turned the same way
        np.testing.assert_array_equal(as_image(im)[0].pixels.numpy(), img.pixels.numpy())
    # orientation 6: the stored image must turn 90 degrees clockwise to display upright; 8: counter-clockwise
    np.testing.assert_array_equal(img.pixels.numpy(), np.rot90(rgb, turns))


def test_exif_orientation_jpeg(rgb, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "o.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "o.jpg") as im:
        raw = np.asarray(im.convert("RGB"))
    img = load_image(tmp_path / "o.jpg")
    assert tuple(img.pixels.shape) == (rgb.shape[1], rgb.shape[0], 3)
    np.testing.assert_array_equal(img.pixels.numpy(), np.rot90(raw, -1))


def test_decompression_bomb_guard(rgb, tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(rgb).save(path)
    n = rgb.shape[0] * rgb.shape[1]
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        load_image(path, max_pixels=n - 1)
    assert load_image(path, max_pixels=n).pixels.shape[0] == rgb.shape[0]
    # Pillow's own limit stays on by default, between 1x and 2x (a warning in Pillow) and above 2x (an error)
    for limit in (n - 1, n // 3):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(ImageTooLargeError, match="--max-pixels"):
            load_image(path)
        img = load_image(path, max_pixels=n)  # lifted explicitly, for this call only
        np.testing.assert_array_equal(img.pixels.numpy(), rgb)
        assert Image.MAX_IMAGE_PIXELS == limit
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        as_image(rgb, max_pixels=10)


def test_bad_files(rgb, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(IsADirectoryError):
        load_image(tmp_path)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "notes.png")
    for suffix in (".png", ".jpg"):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG" if suffix == ".png" else "JPEG")
        (tmp_path / f"cut{suffix}").write_bytes(buf.getvalue()[: buf.tell() // 2])
        with pytest.raises(ImageError, match="truncated"):
            load_image(tmp_path / f"cut{suffix}")


def _outcome(path, max_pixels=None):
    """(exception type, message) of ``load_image``, or ("ok", pixels, alpha, mode) of the image it loads."""
    try:
        img = load_image(path, max_pixels=max_pixels)
    except Exception as e:
        return type(e), str(e)
    return "ok", img.pixels.numpy().tobytes(), None if img.alpha is None else img.alpha.numpy().tobytes(), img.mode


def test_prefetched_decode_equals_direct_decode(rgb, tmp_path, monkeypatch):
    """The command line decodes its input in a background thread (prefetch): load_image then gives the same
    arrays, and the same error type and message for every bad file, as a decode in the calling thread."""
    from pixelkm.io.pillow import drop_prefetch, prefetch

    Image.fromarray(rgb).save(tmp_path / "ok.png")
    Image.fromarray(np.dstack([rgb, _alpha_ramp(*rgb.shape[:2])]), "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(rgb[:, :, 0]).convert("P").save(tmp_path / "p.gif")
    (tmp_path / "notes.png").write_text("not an image")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: buf.tell() // 2])
    n = rgb.shape[0] * rgb.shape[1]
    cases = [
        ("ok.png", None),
        ("alpha.png", None),
        ("p.gif", None),
        ("missing.png", None),
        (".", None),
        ("notes.png", None),
        ("cut.png", None),
        ("ok.png", n - 1),  # above max_pixels
        ("ok.png", 0),  # a bad max_pixels
    ]
    import threading

    from pixelkm.io import pillow

    threads = []  # the thread of every decode
    decode = pillow._decode
    monkeypatch.setattr(pillow, "_decode", lambda *a: threads.append(threading.current_thread().name) or decode(*a))
    for name, limit in cases:
        path = tmp_path / name
        direct = _outcome(path, limit)
        prefetch(path, limit)
        assert _outcome(path, limit) == direct, name
    assert threads == [threading.current_thread().name, "pixelkm-decode"] * len(cases)
    assert _outcome(tmp_path / "ok.png")[0] == "ok"
    # taken by its own file only (another file read meanwhile leaves it), and once only
    threads.clear()
    prefetch(tmp_path / "ok.png")
    assert load_image(tmp_path / "alpha.png").alpha is not None
    assert load_image(tmp_path / "ok.png").alpha is None and load_image(tmp_path / "ok.png").alpha is None
    assert sorted(threads) == sorted([threading.current_thread().name] * 2 + ["pixelkm-decode"])
    # another limit or a file changed since the prefetch: read again
    prefetch(tmp_path / "ok.png", n - 1)
    assert load_image(tmp_path / "ok.png").pixels.shape[0] == rgb.shape[0]
    prefetch(tmp_path / "ok.png")
    Image.fromarray(rgb[::2, ::2].copy()).save(tmp_path / "ok.png")
    np.testing.assert_array_equal(load_image(tmp_path / "ok.png").pixels.numpy(), rgb[::2, ::2])
    prefetch(tmp_path / "ok.png")
    drop_prefetch()
    np.testing.assert_array_equal(load_image(tmp_path / "ok.png").pixels.numpy(), rgb[::2, ::2])


def test_arrays_and_tensors(rgb):
    img, as_t = as_image(rgb)
    assert not as_t and img.alpha is None
    img, as_t = as_image(torch.from_numpy(np.dstack([rgb, _alpha_ramp(*rgb.shape[:2])])))
    assert as_t and img.alpha is not None
    gray, _ = as_image(rgb[:, :, 0])
    np.testing.assert_array_equal(gray.pixels[:, :, 2].numpy(), rgb[:, :, 0])
    with pytest.raises(ImageError, match="uint8"):
        as_image(rgb.astype(np.float32))
    with pytest.raises(ImageError, match="shape"):
        as_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(TypeError, match="image must be"):
        as_image(42)
    with pytest.raises(ValueError, match="not available|device"):
        as_image(rgb, device="cuda:99")


def test_atomic_write(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write(path, lambda f: f.write(b"first"))
    assert path.read_bytes() == b"first"
    with pytest.raises(FileExistsError, match="--force"):
        atomic_write(path, lambda f: f.write(b"second"))
    assert path.read_bytes() == b"first"

    def fails(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fails, force=True)
    assert path.read_bytes() == b"first"
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "new.bin", fails)
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]  # no temporary file, no half-written file
    atomic_write(path, lambda f: f.write(b"second"), force=True)
    assert path.read_bytes() == b"second"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write(tmp_path / "no" / "x.bin", lambda f: f.write(b""))


def test_save_image_roundtrip(rgb, tmp_path):
    a = _alpha_ramp(*rgb.shape[:2])
    save_image(np.dstack([rgb, a]), tmp_path / "x.png")
    img = load_image(tmp_path / "x.png")
    np.testing.assert_array_equal(img.pixels.numpy(), rgb)
    np.testing.assert_array_equal(img.alpha.numpy(), a)
    save_image(torch.from_numpy(rgb), tmp_path / "x.jpg")
    assert load_image(tmp_path / "x.jpg").pixels.shape == rgb.shape
    with pytest.raises(ValueError, match="suffix"):
        save_image(rgb, tmp_path / "x.unknown")


def test_raised_limit_still_guards(rgb, tmp_path, monkeypatch):
    """A max_pixels above Pillow's limit is itself a limit: an image far above it is refused too."""
    path = tmp_path / "big.png"
    Image.fromarray(rgb).save(path)
    n = rgb.shape[0] * rgb.shape[1]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", n // 10)
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        load_image(path, max_pixels=n // 4)  # above Pillow's limit, and the image is over twice this one
    assert Image.MAX_IMAGE_PIXELS == n // 10
