"""The image applications on tiny hand-checked images and on real photos; plots."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from conftest import photo_path
from PIL import Image
from sklearn.cluster import KMeans as SkKMeans
from sklearn.metrics import silhouette_score as sk_silhouette

import pixelkm.image as pim

A, B, C, D = (200, 30, 40), (20, 60, 220), (240, 240, 240), (10, 10, 10)


@pytest.fixture(scope="module")
def photo():
    """kodim23 at a quarter of its size, (128, 192, 3) uint8."""
    with Image.open(photo_path("kodim23.png")) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"))[::4, ::4])


def blocks(*colors, h=8, w=8):
    """A row of h x w blocks of the given colors."""
    return np.concatenate([np.full((h, w, 3), c, np.uint8) for c in colors], axis=1)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255**2 / mse)


# -- quantize -----------------------------------------------------------------------------------------------


def test_quantize_exact_on_few_colors():
    img = blocks(A, B, C, D, A)
    r = pim.quantize(img, 4)
    assert sorted(map(tuple, r.palette.tolist())) == sorted([A, B, C, D])
    assert tuple(r.palette[0]) == A  # A covers 2 blocks: the largest share comes first
    np.testing.assert_allclose(r.shares, [0.4, 0.2, 0.2, 0.2])
    np.testing.assert_array_equal(r.image, img)
    assert r.psnr == math.inf
    # more colors asked than the image has: duplicates merge, nothing empty is kept
    r8 = pim.quantize(img, 8)
    assert r8.n_colors == 4
    np.testing.assert_array_equal(r8.image, img)


def test_quantize_palette_is_the_cluster_means():
    img = np.zeros((4, 4, 3), np.uint8)
    img[:, :2] = 0
    img[:, 2:] = 200
    img[0, 0] = 10  # cluster 1: fifteen 0s and one 10 per channel
    img[0, 3] = 220  # cluster 2: seven 200s and one 220
    r = pim.quantize(img, 2)
    # by hand: mean of {0 x7, 10} = 1.25 -> 1; mean of {200 x7, 220} = 202.5 -> 202 (round half to even)
    np.testing.assert_array_equal(r.palette, [[1, 1, 1], [202, 202, 202]])
    np.testing.assert_array_equal(r.labels, np.repeat([[0, 0, 1, 1]], 4, 0))


def test_quantize_photo_consistency(photo):
    r = pim.quantize(photo, 16)
    assert r.palette.dtype == np.uint8 and r.palette.shape == (16, 3)
    assert r.labels.shape == photo.shape[:2] and r.image.shape == photo.shape
    np.testing.assert_array_equal(r.image, r.palette[r.labels])
    counts = np.bincount(r.labels.ravel(), minlength=16)
    np.testing.assert_allclose(r.shares, counts / counts.sum())
    assert np.all(np.diff(r.shares) <= 0)
    assert r.psnr == pytest.approx(psnr(r.image, photo), abs=1e-9)


def test_quantize_quality_against_scikit_learn(photo):
    """Same k-means++ and n_init: mean PSNR over three seeds within 0.1 dB of scikit-learn's (the README
    benchmark does this on every full-size photo)."""
    X = photo.reshape(-1, 3).astype(np.float64)
    ours, theirs = [], []
    for seed in range(3):
        sk = SkKMeans(8, n_init=3, random_state=seed).fit(X)
        sk_img = np.clip(np.round(sk.cluster_centers_), 0, 255).astype(np.uint8)[sk.labels_].reshape(photo.shape)
        theirs.append(psnr(sk_img, photo))
        ours.append(pim.quantize(photo, 8, n_init=3, random_state=seed).psnr)
    assert np.mean(ours) >= np.mean(theirs) - 0.1


def test_quantize_perceptual_spaces(photo):
    for space in ("lab", "oklab"):
        r = pim.quantize(photo, 8, features=space)
        np.testing.assert_array_equal(r.image, r.palette[r.labels])
        # the palette holds each cluster's mean sRGB color
        for i in range(r.n_colors):
            mean = photo[r.labels == i].mean(0)
            assert np.abs(r.palette[i].astype(float) - mean).max() <= 0.5 + 1e-9
    with pytest.raises(ValueError, match="rgb, lab or oklab"):
        pim.quantize(photo, 8, features="xyrgb")


def test_quantize_transparency(tmp_path):
    rgb = blocks(A, B, (0, 255, 0), h=6, w=6)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, 12:] = 0  # the green block is transparent: it must not enter the palette
    r = pim.quantize(np.dstack([rgb, alpha]), 4)
    assert sorted(map(tuple, r.palette.tolist())) == sorted([A, B])
    assert np.all(r.labels[:, 12:] == -1) and np.all(r.labels[:, :12] >= 0)
    assert r.image.shape == (6, 18, 4)
    np.testing.assert_array_equal(r.image[:, :, 3], alpha)
    info = r.save(tmp_path / "q.png")
    with Image.open(info.path) as im:
        assert im.mode == "P"
    back = pim.load_image(info.path)
    np.testing.assert_array_equal(back.alpha.numpy(), alpha)
    np.testing.assert_array_equal(back.pixels.numpy()[:, :12], rgb[:, :12])
    # partial transparency cannot live in a palette PNG: RGBA with the same alpha
    alpha[:, :3] = 128
    r = pim.quantize(np.dstack([rgb, alpha]), 4)
    r.save(tmp_path / "q2.png")
    back = pim.load_image(tmp_path / "q2.png")
    np.testing.assert_array_equal(back.alpha.numpy(), alpha)
    with pytest.raises(pim.ImageError, match="transparent"):
        pim.quantize(np.dstack([rgb, np.zeros_like(alpha)]), 2)


def test_quantize_save_reports_size_ratio(photo, tmp_path):
    src = tmp_path / "photo.png"
    Image.fromarray(photo).save(src)
    r = pim.quantize(src, 8)
    info = r.save(tmp_path / "q.png")
    assert info.original_bytes == src.stat().st_size
    assert info.bytes == (tmp_path / "q.png").stat().st_size
    assert info.ratio == pytest.approx(info.bytes / info.original_bytes) and info.ratio < 1
    back = pim.load_image(tmp_path / "q.png")
    np.testing.assert_array_equal(back.pixels.numpy(), r.image)
    with pytest.raises(FileExistsError):
        r.save(tmp_path / "q.png")
    assert r.save(tmp_path / "q.png", force=True).bytes == info.bytes


def test_dither_uses_the_fitted_palette_and_keeps_the_mean():
    img = blocks(D, C, h=16, w=16)
    img[4:12, 4:12] = 100  # a gray square inside the black block, 64 pixels
    nearest = pim.quantize(img, 2)
    dithered = pim.quantize(img, 2, dither=True)
    np.testing.assert_array_equal(nearest.palette, dithered.palette)
    np.testing.assert_array_equal(dithered.image, dithered.palette[dithered.labels])
    sq_near = nearest.image[4:12, 4:12].astype(float).mean()
    sq_dith = dithered.image[4:12, 4:12].astype(float).mean()
    # error diffusion keeps the square's mean gray; nearest color does not
    assert abs(sq_dith - 100) < abs(sq_near - 100)
    assert len(np.unique(dithered.labels[4:12, 4:12])) == 2
    counts = np.bincount(dithered.labels.ravel(), minlength=2)
    np.testing.assert_allclose(dithered.shares, counts / counts.sum())
    again = nearest.dither()  # the same palette, dithered without a new fit
    np.testing.assert_array_equal(again.labels, dithered.labels)
    assert again.dithered and not nearest.dithered


# -- cleaning -----------------------------------------------------------------------------------------------

SALT = [
    (3, 5, (255, 0, 255)),
    (10, 20, (0, 255, 255)),
    (20, 7, (255, 255, 0)),
    (25, 28, (0, 255, 0)),
    (0, 0, (255, 128, 0)),
]


def salted():
    img = blocks(A, B, h=32, w=16)
    for y, x, c in SALT:
        img[y, x] = c
    return img


def test_find_outliers_finds_the_salt():
    out = pim.find_outliers(torch.from_numpy(salted()))
    expected = np.zeros((32, 32), bool)
    for y, x, _ in SALT:
        expected[y, x] = True
    np.testing.assert_array_equal(out.mask.numpy(), expected)
    assert out.n_outliers == len(SALT)


def test_clean_keeps_noise_out_of_the_palette():
    img = salted()
    plain = pim.quantize(img, 2)
    assert plain.n_outliers == 0
    assert sorted(map(tuple, plain.palette.tolist())) != sorted([A, B])  # the salt shifts the means
    clean = pim.quantize(img, 2, clean="remove")
    assert clean.n_outliers == len(SALT)
    assert sorted(map(tuple, clean.palette.tolist())) == sorted([A, B])
    assert np.all(clean.labels >= 0)  # outliers are still labeled, with the nearest color
    down = pim.quantize(img, 2, clean="downweight", outlier_weight=0.01)
    err_plain = np.abs(plain.palette.astype(int) - np.array(sorted([A, B]))[[0, 1]]).sum()
    err_down = np.abs(np.sort(down.palette.astype(int), 0) - np.sort(np.array([A, B]), 0)).sum()
    assert err_down <= err_plain
    with pytest.raises(ValueError, match="clean must be"):
        pim.quantize(img, 2, clean="drop")


def test_clean_on_a_noisy_photo(photo):
    rng = np.random.default_rng(1)
    noisy = photo.copy()
    ys, xs = rng.integers(0, photo.shape[0], 200), rng.integers(0, photo.shape[1], 200)
    noisy[ys, xs] = rng.integers(0, 256, (200, 3))
    out = pim.find_outliers(torch.from_numpy(noisy))
    hit = out.mask.numpy()[ys, xs].sum()
    assert hit >= 100  # most of the injected impulses (some land on similar colors)
    assert out.n_outliers - hit <= 0.002 * photo.shape[0] * photo.shape[1]  # few real pixels flagged


# -- segment ------------------------------------------------------------------------------------------------


def test_segment_two_colors():
    img = blocks(A, B, h=8, w=8)
    r = pim.segment(img, 2, features="rgb")
    assert len(np.unique(r.labels[:, :8])) == 1 and len(np.unique(r.labels[:, 8:])) == 1
    assert r.labels[0, 0] != r.labels[0, 8]
    np.testing.assert_array_equal(r.sizes, [64, 64])
    np.testing.assert_array_equal(r.mean_colors[r.labels[0, 0]], A)
    np.testing.assert_array_equal(r.mean_image, img)


def test_segment_xyrgb_splits_by_position():
    img = np.full((1, 20, 3), 128, np.uint8)  # one row of one color: only x can separate segments
    r = pim.segment(img, 2, features="xyrgb")
    left, right = np.unique(r.labels[:, :10]), np.unique(r.labels[:, 10:])
    assert len(left) == 1 and len(right) == 1 and left[0] != right[0]
    np.testing.assert_array_equal(r.sizes, [10, 10])


def test_segment_photo(photo):
    r = pim.segment(photo, 6)
    assert r.labels.shape == photo.shape[:2] and r.overlay.shape == photo.shape
    assert r.sizes.sum() == photo.shape[0] * photo.shape[1] and np.all(np.diff(r.sizes) <= 0)
    for i in range(6):
        np.testing.assert_allclose(r.mean_colors[i], photo[r.labels == i].mean(0), atol=0.5 + 1e-9)
        assert r.sizes[i] == (r.labels == i).sum()
    np.testing.assert_array_equal(r.mean_image, r.mean_colors[r.labels])


# -- palette ------------------------------------------------------------------------------------------------


def test_palette_hand_checked():
    img = blocks(A, A, A, A, A, B, B, B, C, C, h=4, w=4)  # 50%, 30%, 20%
    r = pim.palette(img, 3)
    np.testing.assert_array_equal(r.colors, [A, B, C])
    assert r.hex == ["#c81e28", "#143cdc", "#f0f0f0"]
    np.testing.assert_allclose(r.proportions, [0.5, 0.3, 0.2])
    assert r.swatch.shape == (100, 600, 3)
    for color, (lo, hi) in zip([A, B, C], [(0, 300), (300, 480), (480, 600)]):
        assert np.all(r.swatch[:, lo:hi] == color)
    d = r.to_dict()
    assert [c["hex"] for c in d["colors"]] == r.hex and d["colors"][1]["rgb"] == list(B)


def test_palette_photo_tensor_in_tensor_out(photo):
    r = pim.palette(torch.from_numpy(photo), 5)
    assert isinstance(r.colors, torch.Tensor) and isinstance(r.proportions, torch.Tensor)
    assert r.proportions.sum().item() == pytest.approx(1.0)
    assert torch.all(r.proportions[:-1] >= r.proportions[1:])


# -- remove_background --------------------------------------------------------------------------------------


def framed():
    img = np.full((20, 20, 3), B, np.uint8)
    img[5:15, 5:15] = A
    img[9, 9] = B  # a background-colored pixel inside the subject
    return img


def test_remove_background_hand_checked():
    img = framed()
    r = pim.remove_background(img, 2, border=2)
    expected = np.zeros((20, 20), bool)
    expected[5:15, 5:15] = True  # the subject, including its blue pixel (a hole: not joined to the border)
    np.testing.assert_array_equal(r.mask, expected)
    assert r.n_background == 400 - 100
    np.testing.assert_array_equal(r.image[:, :, :3], img)
    np.testing.assert_array_equal(r.image[:, :, 3], np.where(expected, 255, 0))


def test_remove_background_keeps_transparency():
    img = framed()
    alpha = np.full((20, 20), 255, np.uint8)
    alpha[6:8, 6:8] = 0
    r = pim.remove_background(np.dstack([img, alpha]), 2, border=2)
    assert np.all(r.image[6:8, 6:8, 3] == 0) and not r.mask[6:8, 6:8].any()
    assert r.mask.sum() == 100 - 4


def test_remove_background_photo(photo, tmp_path):
    r = pim.remove_background(photo)
    assert r.image.shape == photo.shape[:2] + (4,) and r.mask.dtype == bool
    assert 0 < r.n_background < photo.shape[0] * photo.shape[1]
    assert r.n_background == (~r.mask).sum()
    r.save(tmp_path / "bg.png")
    np.testing.assert_array_equal(pim.load_image(tmp_path / "bg.png").alpha.numpy() > 0, r.mask)


# -- choose_k -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_silhouette_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, 3)) + rng.integers(0, 4, 300)[:, None] * 3
    labels = rng.integers(0, 5, 300)
    labels[7] = 9  # a singleton cluster scores 0
    ours = pim.silhouette_score(torch.from_numpy(X), torch.from_numpy(labels))
    assert ours == pytest.approx(sk_silhouette(X, labels), rel=1e-10)
    assert math.isnan(pim.silhouette_score(torch.from_numpy(X), torch.zeros(300, dtype=torch.int64)))


def test_elbow_hand_checked():
    assert pim.elbow([1, 2, 3, 4, 5, 6], [100, 30, 20, 15, 12, 10]) == 2
    assert pim.elbow([2, 3, 4, 5, 6], [100, 90, 20, 15, 10]) == 4


@pytest.mark.parametrize("n,m", [(100, 12), (20, 19), (5, 9)], ids=["rejection", "permutation", "m>n"])
def test_random_subset_is_uniform_without_replacement(n, m):
    """choose-k's silhouette sample: distinct indices, each ordered choice equally likely, as randperm(n)[:m]
    (oracle: the expected frequencies, by a chi-square test on a fixed seed; the rejection path is taken with
    repeats in about half the draws at n=100, m=12)."""
    from scipy.stats import chisquare

    from pixelkm.engine.subsample import random_subset

    gen = torch.Generator().manual_seed(0)
    trials = 2000
    first = np.zeros(n)
    included = np.zeros(n)
    for _ in range(trials):
        s = random_subset(n, m, gen)
        assert s.dtype == torch.int64 and s.numel() == min(m, n) == s.unique().numel()
        assert 0 <= int(s.min()) and int(s.max()) < n
        first[int(s[0])] += 1
        included[s.numpy()] += 1
    assert chisquare(first).pvalue > 1e-3
    if m < n:
        assert chisquare(included).pvalue > 1e-3


def test_choose_k_finds_three_colors():
    rng = np.random.default_rng(0)
    img = blocks(A, B, C, h=24, w=24).astype(np.int16)
    img = np.clip(img + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
    r = pim.choose_k(img, range(2, 8), sample_size=500)
    assert r.ks == [2, 3, 4, 5, 6, 7] and len(r.inertia) == len(r.silhouette) == 6
    assert r.elbow_k == 3 and r.silhouette_k == 3 and r.suggested_k == 3
    assert r.sample_size == 500


def test_choose_k_photo(photo):
    r = pim.choose_k(photo, [2, 4, 6], sample_size=800, fit_size=10_000)
    assert r.inertia[0] > r.inertia[1] > r.inertia[2]
    assert all(-1 <= s <= 1 for s in r.silhouette) and r.suggested_k in r.ks
    assert r.to_dict()["suggested_k"] == r.suggested_k
    with pytest.raises(ValueError, match="positive int"):
        pim.choose_k(photo, [0, 2])


# -- plots --------------------------------------------------------------------------------------------------


def test_plots(photo, tmp_path):
    pytest.importorskip("matplotlib")
    small = photo[::2, ::2]
    figs = {
        "q": pim.plot_quantize(pim.quantize(small, 4)),
        "p": pim.plot_palette(pim.palette(small, 4)),
        "s": pim.plot_segments(pim.segment(small, 3)),
        "k": pim.plot_choose_k(pim.choose_k(small, [2, 3, 4], sample_size=200)),
    }
    for name, fig in figs.items():
        path = pim.save_figure(fig, tmp_path / f"{name}.png")
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 100
    with pytest.raises(FileExistsError):
        pim.save_figure(figs["q"], tmp_path / "q.png")
    assert pim.save_figure(figs["p"], tmp_path / "p.pdf").read_bytes()[:5] == b"%PDF-"
    # the command's figure rule: a suffix matplotlib does not write (.bmp) is refused before anything is written
    with pytest.raises(ValueError, match="cannot tell which figure format"):
        pim.save_figure(figs["p"], tmp_path / "p.bmp")
    assert not (tmp_path / "p.bmp").exists()


def test_plots_without_matplotlib(photo, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'pixelkm\[plot\]'"):
        pim.plot_palette(pim.palette(photo[::4, ::4], 2))


# -- devices ------------------------------------------------------------------------------------------------


def test_loaded_image_and_arrays_follow_the_input(photo, tmp_path):
    Image.fromarray(photo).save(tmp_path / "p.png")
    from_path = pim.quantize(tmp_path / "p.png", 4)
    from_loaded = pim.quantize(pim.load_image(tmp_path / "p.png"), 4)
    assert isinstance(from_path.palette, np.ndarray) and isinstance(from_loaded.palette, torch.Tensor)
    np.testing.assert_array_equal(from_path.palette, from_loaded.palette.numpy())
    np.testing.assert_array_equal(from_path.labels, from_loaded.labels.numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensors_stay_on_the_gpu(photo):
    t = torch.from_numpy(photo).cuda()
    q = pim.quantize(t, 8, clean="remove", dither=True)
    assert q.palette.is_cuda and q.labels.is_cuda and q.image.is_cuda
    cpu = pim.quantize(photo, 8, clean="remove", dither=True)
    assert q.psnr == pytest.approx(cpu.psnr, abs=0.3)
    s = pim.segment(t, 4)
    assert s.labels.is_cuda and int(s.sizes.sum()) == photo.shape[0] * photo.shape[1]
    b = pim.remove_background(t)
    assert b.mask.is_cuda
    c = pim.choose_k(t, [2, 3], sample_size=300)
    assert c.suggested_k in (2, 3)
    X = torch.randn(200, 3, dtype=torch.float64)
    lab = torch.randint(0, 4, (200,))
    assert pim.silhouette_score(X.cuda(), lab.cuda()) == pytest.approx(pim.silhouette_score(X, lab), rel=1e-9)


def test_progress_bar_is_optional(photo, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    r = pim.choose_k(photo[::4, ::4], [2, 3], sample_size=100, progress=True)
    assert r.ks == [2, 3]
