"""Histogram reduction of uint8 data: exact counts, and the fit on (distinct color, count) equals the pixel fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pixelkm
from pixelkm.engine import histogram as _histogram
from pixelkm.engine.histogram import color_histogram, reduce_colors
from pixelkm.engine.sources import mean_feature_variance


@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("dense", [True, False], ids=["bincount", "unique"])
def test_histogram_matches_numpy_unique(d, dense, monkeypatch):
    monkeypatch.setattr(_histogram, "_use_dense", lambda n, dd: dense and 8 * dd <= 24)
    rng = np.random.default_rng(d)
    X = rng.integers(0, 6, size=(5000, d)).astype(np.uint8) * 51  # few distinct rows, many duplicates
    w = rng.uniform(0, 2, size=5000)
    h = color_histogram(torch.from_numpy(X), torch.from_numpy(w))
    uniq, inv, cnt = np.unique(X, axis=0, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(h.colors.numpy(), uniq)  # increasing key order = lexicographic order
    np.testing.assert_array_equal(h.counts.numpy(), cnt)
    np.testing.assert_array_equal(h.inverse.numpy(), inv.reshape(-1))
    np.testing.assert_allclose(h.weights.numpy(), np.bincount(inv.reshape(-1), weights=w), rtol=1e-12)
    assert float(h.variance) == pytest.approx(float(mean_feature_variance(torch.from_numpy(X)[None])[0]), rel=1e-12)
    for inverse in (True, False):  # unweighted, with and without the inverse index (the CPU's dense passes)
        u = color_histogram(torch.from_numpy(X), inverse=inverse)
        np.testing.assert_array_equal(u.colors.numpy(), uniq)
        np.testing.assert_array_equal(u.counts.numpy(), cnt)
        if inverse or u.inverse is not None:
            np.testing.assert_array_equal(u.inverse.numpy(), inv.reshape(-1))


def test_reduce_colors_only_where_it_pays(photo_pixels):
    X = torch.from_numpy(photo_pixels("kodim23.png", step=2))
    assert reduce_colors(X) is not None
    assert reduce_colors(X.float()) is None  # only uint8
    assert reduce_colors(X[:1000]) is None  # too few rows
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (50000, 3), dtype=np.uint8))
    assert reduce_colors(noise) is None  # nearly every row distinct
    assert reduce_colors(X, n_clusters=10**6) is None  # more clusters than colors


@pytest.mark.parametrize("name, tol", [("kodim03.png", 0.0), ("kodim13.png", 1e-5), ("kodim20.png", 1e-3)])
def test_fit_on_histogram_equals_fit_on_pixels(photo_pixels, name, tol):
    pixels = photo_pixels(name, step=4)
    X = pixels.astype(np.float64)
    # distinct initial colors: with duplicate centers, empty clusters would take the farthest *pixels* (possibly
    # one color twice) in the pixel fit but the farthest distinct *colors* in the histogram fit
    colors = np.unique(pixels, axis=0)
    init = colors[np.random.default_rng(0).choice(len(colors), 8, replace=False)].astype(np.float64)
    ref = pixelkm.KMeans(8, init=init, tol=tol, max_iter=100).fit(X)
    h = color_histogram(torch.from_numpy(pixels))
    assert len(h.colors) < len(X) / 2
    ours = pixelkm.KMeans(8, init=init, tol=h.rescaled_tol(tol), max_iter=100).fit(
        h.colors.double().numpy(), sample_weight=h.weights.double().numpy()
    )
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(ours.labels_[h.inverse.numpy()], ref.labels_)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)


def test_perceptual_features_reduce_through_colors(photo_pixels):
    """Features that are a function of the color (e.g. CIELAB) are fitted on the histogram's colors."""
    pixels = photo_pixels("kodim05.png", step=3)

    def features(rgb: np.ndarray) -> np.ndarray:  # a nonlinear color transform (gamma, then a cube root)
        lin = (rgb / 255.0) ** 2.2
        return np.cbrt(lin @ np.array([[0.41, 0.21, 0.02], [0.36, 0.72, 0.12], [0.18, 0.07, 0.95]]))

    F = features(pixels.astype(np.float64))
    init = F[np.random.default_rng(1).choice(len(F), 6, replace=False)]
    ref = pixelkm.KMeans(6, init=init, tol=0).fit(F)
    h = color_histogram(torch.from_numpy(pixels))
    ours = pixelkm.KMeans(6, init=init, tol=0).fit(
        features(h.colors.double().numpy()), sample_weight=h.weights.double()
    )
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ours.labels_[h.inverse.numpy()], ref.labels_)


def test_weighted_kmeanspp_on_histogram_quality(photo_pixels):
    """k-means++ on (color, count) draws with the pixel-level probabilities: the same quality after Lloyd."""
    pixels = photo_pixels("kodim23.png", step=4)
    h = color_histogram(torch.from_numpy(pixels))
    X = pixels.astype(np.float32)
    on_hist = [
        pixelkm.KMeans(8, random_state=s).fit(h.colors.float(), sample_weight=h.weights).inertia_ for s in range(3)
    ]
    on_pixels = [pixelkm.KMeans(8, random_state=s).fit(X).inertia_ for s in range(3)]
    assert np.mean(on_hist) <= 1.02 * np.mean(on_pixels)


def test_kmeans_fit_reduces_uint8_automatically(photo_pixels, capsys):
    pixels = photo_pixels("kodim13.png", step=2)
    init = pixels[np.random.default_rng(2).choice(len(pixels), 8, replace=False)].astype(np.float32)
    ours = pixelkm.KMeans(8, init=init, tol=1e-4, verbose=True).fit(pixels)
    assert "Histogram reduction" in capsys.readouterr().out
    ref = pixelkm.KMeans(8, init=init, tol=1e-4).fit(pixels.astype(np.float32))
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-4, atol=1e-3)
    assert (ours.labels_ == ref.labels_).mean() > 0.999
    assert ours.labels_.shape == (len(pixels),)


@pytest.mark.parametrize("d,n", [(1, 500), (2, 5000), (3, 270_000), (3, 5000), (4, 5000)])
def test_map_rows_equals_gather_through_the_inverse(d, n):
    """map_rows(X, colors, values) is values[inverse] (the oracle: numpy's inverse index), for every dtype of
    values, through the dense table (d <= 3, many rows) and through the sorted keys (few rows, d = 4)."""
    from pixelkm.engine.histogram import map_rows

    rng = np.random.default_rng(n + d)
    X = rng.integers(0, 256 if d < 3 else 40, size=(n, d)).astype(np.uint8)
    # the distinct rows in lexicographic order, through their base-256 numbers (np.unique(axis=0) is 10x slower)
    _, first, inv = np.unique(
        X.astype(np.int64) @ 256 ** np.arange(d - 1, -1, -1), return_index=True, return_inverse=True
    )
    uniq = X[first]
    m = uniq.shape[0]
    for values in (
        torch.arange(m),
        torch.arange(m) * 2**40 - 7,  # int64 beyond int32
        torch.from_numpy(rng.normal(size=m).astype(np.float32)),
        torch.from_numpy(rng.integers(0, 2, m).astype(bool)),
    ):
        got = map_rows(torch.from_numpy(X), torch.from_numpy(uniq), values)
        assert got.dtype == values.dtype and got.shape == (n,)
        np.testing.assert_array_equal(got.numpy(), values.numpy()[inv])
