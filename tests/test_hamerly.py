"""Hamerly's bounds-based loop against full Lloyd passes (the oracle) and scikit-learn; the n_init pick."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import count_calls, make_blobs
from sklearn.cluster import KMeans as SKKMeans

import pixelkm
from pixelkm.engine import bounds as _hamerly
from pixelkm.engine.lloyd import same_clustering


def fit(X, k, algorithm, sample_weight=None, **kw):
    return pixelkm.KMeans(k, algorithm=algorithm, **kw).fit(X, sample_weight=sample_weight)


def assert_same_fit(a, b, rtol):
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=rtol, atol=rtol)
    assert a.n_iter_ == b.n_iter_
    assert a.inertia_ == pytest.approx(b.inertia_, rel=rtol)


@pytest.fixture(autouse=True)
def every_step_bounded(monkeypatch):
    """Take the bounds from the second pass on and never fall back to full passes, so that small tests run the
    bounded steps (the defaults would give them full passes until few points move)."""
    monkeypatch.setattr(_hamerly, "ENTER_FRACTION", 1.0)
    monkeypatch.setattr(_hamerly, "FULL_PASS_FRACTION", 1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint8])
@pytest.mark.parametrize("k", [2, 9, 40])  # 40: candidates first get the distance to their own center
def test_same_iterates_as_full_passes_on_blobs(dtype, k):
    X = make_blobs(3000, 3, 12, seed=k, spread=2.0)
    X = np.clip(X * 10 + 128, 0, 255).round().astype(dtype) if dtype == np.uint8 else X.astype(dtype)
    init = X[np.random.default_rng(k).choice(len(X), k, replace=False)]
    full = fit(X, k, "lloyd", init=init, tol=0, max_iter=200)
    bounds = fit(X, k, "hamerly", init=init, tol=0, max_iter=200)
    assert_same_fit(bounds, full, rtol=1e-12 if dtype == np.float64 else 1e-5)
    assert bounds.n_iter_ > 2
    if dtype == np.float64:  # and scikit-learn's exact Lloyd
        ref = SKKMeans(k, init=init, n_init=1, tol=0, max_iter=200, algorithm="lloyd").fit(X)
        np.testing.assert_array_equal(bounds.labels_, ref.labels_)
        assert bounds.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
        assert bounds.n_iter_ == ref.n_iter_


def test_photo_weighted_and_max_iter(photo_pixels):
    """A photo's distinct colors with their counts as weights (the histogram fit), stopped by max_iter and by tol."""
    px = photo_pixels("kodim05.png", step=2)
    colors, counts = np.unique(px, axis=0, return_counts=True)
    X, w = colors.astype(np.float32), counts.astype(np.float32)
    for kw in ({"max_iter": 7, "tol": 0.0}, {"max_iter": 300, "tol": 1e-4}):
        full = fit(X, 16, "lloyd", random_state=3, sample_weight=w, **kw)
        bounds = fit(X, 16, "hamerly", random_state=3, sample_weight=w, **kw)
        assert_same_fit(bounds, full, rtol=1e-5)


def test_empty_cluster_is_refilled_as_in_full_passes():
    """Two initial centers far from every point: their clusters are empty after the first pass and refilled from
    the farthest points, in the same way."""
    X = make_blobs(2000, 2, 4, seed=5)
    init = np.concatenate([X[:4], [[1e3, 1e3], [-1e3, 1e3]]])
    full = fit(X, 6, "lloyd", init=init, tol=0)
    bounds = fit(X, 6, "hamerly", init=init, tol=0)
    assert_same_fit(bounds, full, rtol=1e-12)


def test_fallback_to_full_passes_and_auto(monkeypatch):
    """With the default thresholds the loop mixes full passes and bounded steps; auto takes the bounds on the CPU
    from MIN_ROWS rows only, and never for a batch (on the torch backend: the cpu backend has bounds of its own)."""
    monkeypatch.setenv("PIXELKM_BACKEND", "torch")
    monkeypatch.setattr(_hamerly, "ENTER_FRACTION", 0.05)
    monkeypatch.setattr(_hamerly, "FULL_PASS_FRACTION", 0.2)
    X = make_blobs(6000, 3, 10, seed=8, spread=3.0).astype(np.float32)
    init = X[:10]
    assert_same_fit(fit(X, 10, "hamerly", init=init, tol=0), fit(X, 10, "lloyd", init=init, tol=0), rtol=1e-5)
    calls = count_calls(monkeypatch, _hamerly, "TorchBounds")
    monkeypatch.setattr(_hamerly, "MIN_ROWS", 5000)
    fit(X, 10, "auto", init=init)
    fit(X[:4000], 10, "auto", init=init)
    pixelkm.kmeans(np.stack([X, X]), 10, random_state=0)
    assert calls == [1]
    monkeypatch.setattr(_hamerly, "memory_budget", lambda: 6000 * _hamerly.BYTES_PER_ROW - 1)
    fit(X, 10, "auto", init=init)  # bounds larger than the memory budget: full passes
    assert calls == [1]


def test_bad_algorithm():
    X = make_blobs(100, 2, 3, seed=1)
    with pytest.raises(ValueError, match=r"algorithm must be one of \('auto', 'lloyd', 'hamerly', 'yinyang'\)"):
        fit(X, 3, "elkan")
    with pytest.raises(ValueError, match="algorithm='hamerly' cannot run here: .*not a batch"):
        pixelkm.kmeans(np.stack([X, X]), 3, algorithm="hamerly")
    with pytest.raises(ValueError, match="algorithm='hamerly' cannot run here: .*spherical"):
        fit(X, 3, "hamerly", spherical=True)


def test_hamerly_beyond_the_cpu_kernels_features():
    # the cpu backend's bounded pass stops at 14 features: with the auto choice of backend the torch bounds run
    # (the iterates of full passes); a backend named by the caller that has none is an error saying why
    X = make_blobs(2000, 15, 8, seed=2)
    bounded = pixelkm.KMeans(8, algorithm="hamerly", random_state=0).fit(X)
    full = pixelkm.KMeans(8, algorithm="lloyd", random_state=0).fit(X)
    np.testing.assert_array_equal(bounded.labels_, full.labels_)
    assert bounded.n_iter_ == full.n_iter_ and bounded.inertia_ == pytest.approx(full.inertia_, rel=1e-12)
    with pytest.raises(ValueError, match=r"the chosen backend here, 'cpu', has none for 15 features"):
        pixelkm.KMeans(8, algorithm="hamerly", backend="cpu", random_state=0).fit(X)


def test_same_clustering_and_the_n_init_pick():
    a = torch.tensor([[0, 0, 1, 2, -1], [0, 1, 1, 2, 2]])
    b = torch.tensor([[2, 2, 0, 1, -1], [0, 1, 2, 2, 2]])
    assert same_clustering(a, b, 3).tolist() == [True, False]
    assert same_clustering(b, a, 3).tolist() == [True, False]
