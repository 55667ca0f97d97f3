"""quantize / segment / choose_k on the exact color histogram, against per-pixel oracles; palette PNGs with
partial alpha, more than 256 colors, a given palette, size guards; alpha through every command."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import photo_path
from PIL import Image

import pixelkm
import pixelkm.image as pim
from pixelkm.image._common import color_data, fit_colors


@pytest.fixture(scope="module")
def photo():
    with Image.open(photo_path("kodim05.png")) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"))[::4, ::4])  # (128, 192, 3)


@pytest.mark.parametrize("features", ["rgb", "lab", "oklab"])
def test_histogram_fit_has_the_per_pixel_iterates(photo, features):
    """The weighted fit on the distinct colors equals KMeans on every pixel's features (same explicit init)."""
    data = color_data(pim.LoadedImage(torch.from_numpy(photo)), features)
    assert data.n_distinct < photo.shape[0] * photo.shape[1]
    X = pim.pixel_features(torch.from_numpy(photo), features).X.to(torch.float32)
    init = data.X[torch.arange(0, data.n_distinct, data.n_distinct // 8)[:8]]  # distinct: no empty cluster
    hist = fit_colors(data, 8, init=init, max_iter=50)
    ref = pixelkm.KMeans(8, init=init, n_init=1, max_iter=50).fit(X)
    scale = float(X.abs().max())
    np.testing.assert_allclose(hist.centers.numpy(), ref.cluster_centers_.numpy(), atol=1e-4 * scale)
    labels = hist.labels[data.inverse]
    assert (labels == ref.labels_).float().mean() > 0.999
    assert hist.inertia == pytest.approx(ref.inertia_, rel=1e-4)
    assert hist.n_iter == ref.n_iter_  # tol relative to the pixels' variance, as per pixel


def test_quantize_lab_psnr_is_the_image_psnr(photo):
    r = pim.quantize(photo, 12, features="lab")
    mse = np.mean((r.image.astype(np.float64) - photo) ** 2)
    assert r.psnr == pytest.approx(10 * np.log10(255**2 / mse), rel=1e-9)


def test_quantize_given_palette_is_the_nearest_color(photo):
    pal = np.array([[0, 0, 0], [255, 255, 255], [200, 30, 40], [30, 90, 200]], np.uint8)
    for features in ("rgb", "lab"):
        r = pim.quantize(photo, palette=pal, features=features)
        f = pim.pixel_features(torch.from_numpy(photo), features).X.double()
        fp = pim.pixel_features(torch.from_numpy(pal[None]), features).X.double()
        want = torch.cdist(f, fp).argmin(1).reshape(photo.shape[:2]).numpy()
        np.testing.assert_array_equal(r.image, pal[want])
    assert r.inertia > 0
    assert pim.load_palette(["#fff", "#000000", [1, 2, 3]]).tolist() == [[255, 255, 255], [0, 0, 0], [1, 2, 3]]
    with pytest.raises(ValueError, match="not a color"):
        pim.load_palette(["#ggg"])
    with pytest.raises(ValueError, match="not a color"):
        pim.load_palette([[0, 0, 256]])
    with pytest.raises(ValueError, match="non-empty list"):
        pim.load_palette([])
    with pytest.raises(ValueError, match="shape"):
        pim.load_palette(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="clean"):
        pim.quantize(photo, palette=pal, clean="remove")


def test_palette_swatch_file(photo, tmp_path):
    sw = pim.palette(photo, 5)
    sw.save(tmp_path / "sw.png")
    r = pim.quantize(photo, palette=tmp_path / "sw.png")
    assert {tuple(c) for c in r.palette.tolist()} == {tuple(c) for c in sw.colors.tolist()}
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    with pytest.raises(ValueError, match="at most 256"):
        pim.load_palette(tmp_path / "noise.png")


def test_partial_alpha_palette_png_with_trns(photo, tmp_path):
    H, W, _ = photo.shape
    alpha = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))  # 0 on the left, 255 on the right
    r = pim.quantize(np.dstack([photo, alpha]), 32)
    assert r.palette_alpha is not None and r.is_palette_image and r.n_entries <= 256
    r.save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "P" and isinstance(im.info["transparency"], bytes)  # tRNS: one alpha per entry
        back = np.asarray(im.convert("RGBA"))
    np.testing.assert_array_equal(back, r.image)
    assert (back[:, :, 3][alpha == 0] == 0).all()  # transparent stays transparent
    opaque = alpha > 0
    for i in range(r.n_colors):  # every entry's alpha is the mean alpha of its pixels (colors and alpha fitted)
        assert abs(int(r.palette_alpha[i]) - alpha[r.labels == i].mean()) <= 0.5 + 1e-9
    assert np.abs(back[:, :, 3][opaque].astype(int) - alpha[opaque]).mean() < 20
    with pytest.raises(ValueError, match="partial transparency"):
        pim.quantize(np.dstack([photo, alpha]), palette=[[0, 0, 0]])


def test_palette_png_indices_equal_the_labels(photo):
    """A palette image takes uint8 indices straight from the histogram (no int64 map): the same indices as the
    labels made afterwards, the transparent pixels on the extra entry, for a fresh result and a dithered one."""
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    alpha[:5, :7] = 0
    for img in (photo, np.dstack([photo, alpha])):
        r = pim.quantize(img, 12)
        assert r._labels is None  # nothing has made the per-pixel labels yet
        idx = np.asarray(r.to_pil())
        labels = r.labels
        assert labels.dtype == np.int64 and labels.shape == photo.shape[:2]
        transparent = labels < 0
        np.testing.assert_array_equal(transparent, (alpha == 0) if img.shape[2] == 4 else np.zeros_like(transparent))
        np.testing.assert_array_equal(idx, np.where(transparent, r.n_colors, labels))
        np.testing.assert_array_equal(np.asarray(r.to_pil()), idx)  # from the labels now: the same
        np.testing.assert_array_equal(r.image[:, :, :3][~transparent], r.palette[labels[~transparent]])
        d = r.dither()
        np.testing.assert_array_equal(np.asarray(d.to_pil()), np.where(d.labels < 0, d.n_colors, d.labels))


@pytest.mark.parametrize("k, dither, rle", [(4, False, True), (16, False, True), (16, True, False), (32, False, False)])
def test_palette_png_of_few_colors_uses_runs(photo, tmp_path, k, dither, rle):
    """Palette PNGs of at most RLE_PNG_COLORS entries and no dithering are written with zlib's run-length strategy
    (smaller and faster for them); dithered ones and larger palettes keep the default. The file decodes to the same
    indices and palette either way, and save() writes exactly what the size guard measured."""
    import zlib

    from pixelkm.image._common import png_options

    r = pim.quantize(photo, k)
    if dither:
        r = r.dither()
    im = r.to_pil()
    opts = png_options(im, tmp_path / "q.png", runs=not dither)
    assert (opts.get("compress_type") == zlib.Z_RLE) == rle
    info = r.save(tmp_path / "q.png")
    with Image.open(tmp_path / "q.png") as out:
        assert out.mode == "P"
        np.testing.assert_array_equal(np.asarray(out), np.asarray(im))
        assert out.getpalette()[: 3 * r.n_colors] == im.getpalette()[: 3 * r.n_colors]
    guarded = r.save(tmp_path / "g.png", max_bytes=10**8)
    assert guarded.bytes == info.bytes == (tmp_path / "g.png").stat().st_size
    assert (tmp_path / "g.png").read_bytes() == (tmp_path / "q.png").read_bytes()


def test_more_than_256_colors_is_truecolor(photo, tmp_path):
    photo = np.ascontiguousarray(photo[::2, ::2])  # 6144 pixels, enough distinct colors, a quick fit
    r = pim.quantize(photo, 300, max_iter=5)
    assert 256 < r.n_colors <= 300 and not r.is_palette_image
    r.save(tmp_path / "t.png")
    with Image.open(tmp_path / "t.png") as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), r.image)
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    alpha[:4] = 0
    r = pim.quantize(np.dstack([photo, alpha]), 256, max_iter=5)  # 256 colors + a transparent entry
    assert r.n_entries == r.n_colors + 1 and (r.n_colors < 256 or not r.is_palette_image)


def test_save_guards(photo, tmp_path):
    r = pim.quantize(photo, 4)
    info = r.save(tmp_path / "a.png", max_bytes=10)
    assert info.skipped and "--max-size" in info.skipped and not (tmp_path / "a.png").exists()
    info = r.save(tmp_path / "a.png", max_bytes=10**7, skip_if_larger=True)
    assert info.skipped is None and (tmp_path / "a.png").stat().st_size == info.bytes
    with pytest.raises(ValueError, match="max_bytes"):
        r.save(tmp_path / "b.png", max_bytes=0)


def test_segment_grid_fit_labels_every_pixel_with_its_nearest_center(photo):
    r = pim.segment(photo, 5, fit_size=2000)
    assert r.fit_pixels <= 2000 * 1.2 and r.labels.shape == photo.shape[:2]
    full = pim.segment(photo, 5, fit_size=None)
    assert full.fit_pixels == photo.shape[0] * photo.shape[1]
    # the segments are the nearest-mean regions of a k-means fit: sizes add up and each mean is its pixels'
    for res in (r, full):
        assert res.sizes.sum() == photo.shape[0] * photo.shape[1]
        for i in range(res.n_segments):
            np.testing.assert_allclose(res.mean_colors[i], photo[res.labels == i].mean(0), atol=0.51)
    assert abs(r.inertia - full.inertia) / full.inertia < 0.1
    with pytest.raises(ValueError, match="fit_size"):
        pim.segment(photo, 3, fit_size=0)


def test_segment_color_features_use_the_histogram(photo):
    r = pim.segment(photo, 4, features="lab")
    q = pim.quantize(photo, 4, features="lab")
    assert r.n_segments == 4 and r.inertia == pytest.approx(q.inertia, rel=1e-6)


def test_alpha_kept_through_every_command(photo):
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    alpha[:, :20] = 0
    rgba = np.dstack([photo, alpha])
    q = pim.quantize(rgba, 8)
    assert (q.image[:, :20, 3] == 0).all() and (q.image[:, 20:, 3] == 255).all() and (q.labels[:, :20] == -1).all()
    s = pim.segment(rgba, 4)
    assert (
        (s.labels[:, :20] == -1).all() and (s.overlay[:, :20, 3] == 0).all() and (s.mean_image[:, 20:, 3] == 255).all()
    )
    p = pim.palette(rgba, 4)
    ref = pim.palette(photo[:, 20:].copy(), 4)
    np.testing.assert_array_equal(p.colors, ref.colors)  # transparent pixels take no part
    c = pim.choose_k(rgba, [2, 3], sample_size=200)
    cref = pim.choose_k(photo[:, 20:].copy(), [2, 3], sample_size=200)
    assert c.inertia == pytest.approx(cref.inertia, rel=1e-6)
    b = pim.remove_background(rgba)
    assert (b.image[:, :20, 3] == 0).all()


def test_choose_k_xy_features(photo):
    r = pim.choose_k(photo, [2, 3, 4], features="xylab", sample_size=300, fit_size=5000)
    assert r.inertia[0] > r.inertia[1] > r.inertia[2]
