"""What the toolkit writes, checked against Pillow's decoding of the file: transparency, colors and formats are kept
or refused with an error naming the format, never lost silently; results never overwrite their inputs."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import pixelkm.image as pim
from pixelkm.io.files import TempFile


def _photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth image of many colors (a ramp plus noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w) + 64], -1)
    return np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)


def _rgba(alpha_right: int) -> np.ndarray:
    """The photo with its left half opaque and its right half of alpha ``alpha_right``."""
    rgb = _photo()
    a = np.full(rgb.shape[:2], 255, np.uint8)
    a[:, rgb.shape[1] // 2 :] = alpha_right
    return np.dstack([rgb, a])


def _decoded_rgba(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


def test_dithering_keeps_every_pixels_alpha():
    """Entries carry alpha: a dithered pixel takes only entries of its own alpha (B1: opaque pixels came out 20)."""
    src = _rgba(20)
    plain = pim.quantize(src, 8)
    dith = pim.quantize(src, 8, dither=True)
    assert np.asarray(plain.palette_alpha).tolist().count(255) >= 2  # several entries of each alpha level
    np.testing.assert_array_equal(np.asarray(dith.image)[..., 3], np.asarray(plain.image)[..., 3])
    np.testing.assert_array_equal(np.asarray(dith.image)[..., 3], src[..., 3])
    assert (np.asarray(dith.labels) != np.asarray(plain.labels)).any()  # dithered, not the nearest colors
    again = plain.dither()  # the same from a result
    np.testing.assert_array_equal(np.asarray(again.image)[..., 3], src[..., 3])


@pytest.mark.parametrize("suffix", [".tif", ".tiff"])
def test_tiff_keeps_transparency(tmp_path, suffix):
    src = _rgba(0)
    r = pim.quantize(src, 8)
    out = r.save(tmp_path / f"q{suffix}").path
    got = _decoded_rgba(out)
    np.testing.assert_array_equal(got[..., 3], src[..., 3])
    opaque = src[..., 3] > 0
    np.testing.assert_array_equal(got[opaque][:, :3], np.asarray(r.image)[opaque][:, :3])


@pytest.mark.parametrize("suffix", [".bmp", ".jpg"])
def test_formats_without_alpha_refuse_transparency(tmp_path, suffix):
    r = pim.quantize(_rgba(0), 8)
    with pytest.raises(ValueError, match=f"the {'BMP' if suffix == '.bmp' else 'JPEG'} format has no transparency"):
        r.save(tmp_path / f"q{suffix}")
    assert list(tmp_path.iterdir()) == []
    opaque = pim.quantize(_photo(), 8)  # without transparency they are written
    opaque.save(tmp_path / f"o{suffix}")
    assert _decoded_rgba(tmp_path / f"o{suffix}").shape == (48, 64, 4)


def test_gif_holds_one_transparent_color_exactly(tmp_path):
    src = _rgba(0)
    r = pim.quantize(src, 8)
    got = _decoded_rgba(r.save(tmp_path / "q.gif").path)
    np.testing.assert_array_equal(got[..., 3], src[..., 3])
    opaque = src[..., 3] > 0
    np.testing.assert_array_equal(got[opaque], np.asarray(r.image)[opaque])


def test_gif_of_a_truecolor_image_with_few_colors_is_exact(tmp_path):
    seg = pim.segment(_rgba(0), 4, features="rgb")
    pim.save_image(seg.mean_image, tmp_path / "m.gif")
    got = _decoded_rgba(tmp_path / "m.gif")
    want = np.asarray(seg.mean_image)
    np.testing.assert_array_equal(got[..., 3], want[..., 3])
    np.testing.assert_array_equal(got[want[..., 3] > 0], want[want[..., 3] > 0])


def test_gif_refuses_partial_alpha(tmp_path):
    r = pim.quantize(_rgba(128), 8)
    with pytest.raises(ValueError, match="GIF format has only fully transparent or opaque pixels"):
        r.save(tmp_path / "q.gif")
    assert list(tmp_path.iterdir()) == []


def test_gif_refuses_more_than_256_colors(tmp_path):
    r = pim.quantize(_photo(), 300)
    assert r.n_colors > 256
    with pytest.raises(ValueError, match="a GIF holds at most 256 colors"):
        r.save(tmp_path / "q.gif")
    assert list(tmp_path.iterdir()) == []


def test_webp_is_lossless(tmp_path):
    r = pim.quantize(_photo(), 8)
    got = _decoded_rgba(r.save(tmp_path / "q.webp").path)
    np.testing.assert_array_equal(got[..., :3], np.asarray(r.image))
    src = _rgba(0)  # with alpha too
    r = pim.quantize(src, 8)
    got = _decoded_rgba(r.save(tmp_path / "a.webp").path)
    np.testing.assert_array_equal(got[..., 3], src[..., 3])
    np.testing.assert_array_equal(got[src[..., 3] > 0], np.asarray(r.image)[src[..., 3] > 0])


def test_results_never_overwrite_their_input(tmp_path):
    """Every result (segment, palette, quantize, remove-bg) refuses its input file as an output, force or not."""
    path = tmp_path / "in.png"
    Image.fromarray(_photo()).save(path)
    before = path.read_bytes()
    for result in (pim.segment(path, 3), pim.palette(path, 3), pim.quantize(path, 3)):
        with pytest.raises(ValueError, match="it is the input file"):
            result.save(path, force=True)
        assert path.read_bytes() == before
    bg = pim.remove_background(path)
    with pytest.raises(ValueError, match="it is the input file"):
        bg.save(path, force=True)
    assert path.read_bytes() == before
    pim.remove_background(_photo()).save(tmp_path / "from-array.png")  # an array has no input file to refuse


def test_quantize_never_overwrites_its_palette_file(tmp_path):
    pal = tmp_path / "pal.png"
    Image.fromarray(_photo()[:4, :4] // 64 * 64).save(pal)
    before = pal.read_bytes()
    for dither in (False, True):
        r = pim.quantize(_photo(), palette=pal, dither=dither)
        with pytest.raises(ValueError, match="it is the input file"):
            r.save(pal, force=True)
        assert pal.read_bytes() == before


def _png16_gray_trns(path, g: np.ndarray, transparent: int) -> None:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    h, w = g.shape
    raw = b"".join(b"\x00" + g[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"tRNS", struct.pack(">H", transparent))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_16_bit_grayscale_with_trns_keeps_its_transparency(tmp_path):
    g = np.full((16, 16), 50000, np.uint16)
    g[:, :8] = 1234  # the tRNS gray value: transparent
    path = tmp_path / "g16.png"
    _png16_gray_trns(path, g, 1234)
    img = pim.load_image(path)
    assert img.alpha is not None
    np.testing.assert_array_equal(img.alpha.numpy(), np.where(g == 1234, 0, 255))
    np.testing.assert_array_equal(img.pixels.numpy()[:, 8:], np.full((16, 8, 3), round(50000 / 257)))


def test_a_long_output_name_is_written(tmp_path):
    """The temporary file's name is short: any name the file system allows works (B14)."""
    name = "a" * 246 + ".png"
    out = pim.quantize(_photo(), 4).save(tmp_path / name).path
    assert out.name == name and [p.name for p in tmp_path.iterdir()] == [name]
    with TempFile(tmp_path / ("b" * 250)) as t:
        assert len(t.path.name.encode()) < 100


def _merge_shades_reference(colors, counts, n_colors, min_delta_e, min_share):
    """The plain algorithm: every difference again at every merge (the oracle of the incremental one)."""
    from pixelkm.image._features import ciede2000, rgb_to_lab

    c = colors.shape[0]
    group = torch.arange(c)
    mean = colors.double().clone()
    cnt = counts.double().clone()
    alive = cnt > 0
    total = float(cnt.sum())
    while int(alive.sum()) > 1:
        idx = torch.nonzero(alive).flatten()
        L = rgb_to_lab(mean[idx].round().clamp(0, 255).to(torch.uint8)).double()
        d = ciede2000(L[:, None], L[None, :])
        d.fill_diagonal_(float("inf"))
        share = cnt[idx] / total
        small = share < min_share
        if bool(small.any()):
            i = int(torch.argmin(torch.where(small, share, torch.inf)))
            j = int(torch.argmin(d[i]))
        else:
            i, j = divmod(int(torch.argmin(d)), idx.numel())
            if idx.numel() <= n_colors and float(d[i, j]) >= min_delta_e:
                break
        a, b = int(idx[i]), int(idx[j])
        if cnt[a] < cnt[b]:
            a, b = b, a
        mean[a] = (mean[a] * cnt[a] + mean[b] * cnt[b]) / (cnt[a] + cnt[b])
        cnt[a] += cnt[b]
        cnt[b] = 0
        alive[b] = False
        group[group == b] = a
    return group


@pytest.mark.parametrize("seed", range(12))
def test_incremental_merge_equals_the_plain_algorithm(seed):
    from pixelkm.image._palette import merge_shades

    g = torch.Generator().manual_seed(seed)
    c = int(torch.randint(2, 80, (1,), generator=g))
    colors = torch.rand(c, 3, generator=g, dtype=torch.float64) * 255
    counts = torch.randint(0, 1000, (c,), generator=g).double()
    counts[0] += 1
    k = int(torch.randint(1, c + 1, (1,), generator=g))
    min_delta_e = [0.0, 8.0, 25.0][seed % 3]
    min_share = [0.0, 0.03][seed % 2]
    want = _merge_shades_reference(colors, counts, k, min_delta_e, min_share)
    assert merge_shades(colors, counts, k, min_delta_e, min_share).tolist() == want.tolist()


def test_palette_bounds_the_clusters_to_merge():
    from pixelkm.image._palette import MAX_MERGE

    img = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)  # 9216 distinct colors
    with pytest.raises(ValueError, match=f"more than the {MAX_MERGE} it merges; ask for at most 1365 colors"):
        pim.palette(img, 2000)
