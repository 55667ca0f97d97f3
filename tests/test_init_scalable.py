"""k-means|| and the lightweight coreset: quality against full k-means++ after Lloyd, unbiasedness, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_blobs

from pixelkm.engine.batched import lloyd_from
from pixelkm.engine.init import kmeans_plusplus
from pixelkm.engine.init_scalable import _tensor_chunks, kmeans_parallel, lightweight_coreset
from pixelkm.engine.sources import mean_feature_variance


def converged_inertia(X: torch.Tensor, centers: torch.Tensor) -> float:
    return float(lloyd_from(X, centers, None, max_iter=300, tol=mean_feature_variance(X) * 1e-4).inertia[0])


def quality_ratio(X: np.ndarray, k: int, seeds: range, **kw) -> float:
    """mean inertia after Lloyd from k-means|| / the same from full greedy k-means++ (same seeds)."""
    Xt = torch.from_numpy(X)[None]
    par, pp = [], []
    for s in seeds:
        c = kmeans_parallel(Xt, k, None, torch.Generator().manual_seed(s), torch.float32, **kw)
        par.append(converged_inertia(Xt, c))
        c, _ = kmeans_plusplus(Xt, k, None, torch.Generator().manual_seed(s), torch.float32)
        pp.append(converged_inertia(Xt, c))
    return float(np.mean(par) / np.mean(pp))


@pytest.mark.parametrize("name", ["kodim05.png", "kodim23.png"])
def test_kmeans_parallel_quality_on_photos(photo_pixels, name):
    X = photo_pixels(name, step=2).astype(np.float32)  # 98k pixels: the rounds run on a 16k-point coreset
    assert quality_ratio(X, 16, range(3), coreset_size=1 << 14) <= 1.02


def test_kmeans_parallel_quality_on_blobs_without_coreset():
    X = make_blobs(6000, 4, 20, seed=7, spread=2.0).astype(np.float32)
    assert quality_ratio(X, 20, range(3)) <= 1.02


def test_coreset_is_unbiased():
    X = torch.from_numpy(make_blobs(200_000, 3, 5, seed=1, spread=3.0))
    w = torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    pts, cw = lightweight_coreset(_tensor_chunks(X, w), 4000, torch.Generator().manual_seed(1), torch.float64)
    assert 3000 < len(pts) <= 4400  # Poisson sampling: about the requested size
    assert float(cw.sum()) == pytest.approx(float(w.sum()), rel=0.05)
    mean = (pts * cw[:, None]).sum(0) / cw.sum()
    ref = (X * w[:, None]).sum(0) / w.sum()
    np.testing.assert_allclose(mean.numpy(), ref.numpy(), atol=0.1 * float(X.std()))
    # zero-weight points never enter the coreset
    w[:100_000] = 0
    pts, cw = lightweight_coreset(_tensor_chunks(X, w), 4000, torch.Generator().manual_seed(1), torch.float64)
    assert not bool((pts[:, None] == X[:100_000][None, :5000]).all(-1).any())


def test_kmeans_parallel_seeded_batched_and_weighted():
    Xs = torch.from_numpy(np.stack([make_blobs(3000, 3, 6, seed=s) for s in range(2)]))
    a = kmeans_parallel(Xs, 6, None, torch.Generator().manual_seed(5), torch.float64)
    b = kmeans_parallel(Xs, 6, None, torch.Generator().manual_seed(5), torch.float64)
    assert a.shape == (2, 6, 3) and torch.equal(a, b)
    w = torch.zeros(2, 3000, dtype=torch.float64)
    w[:, :1500] = 1.0
    c = kmeans_parallel(Xs, 6, w, torch.Generator().manual_seed(5), torch.float64)
    for bi in range(2):  # every center lies within the weighted points' bounding box
        lo, hi = Xs[bi, :1500].min(0).values, Xs[bi, :1500].max(0).values
        assert bool(((c[bi] >= lo - 1e-9) & (c[bi] <= hi + 1e-9)).all())


def test_kmeans_estimator_accepts_kmeans_parallel(photo_pixels):
    import pixelkm

    X = photo_pixels("kodim20.png", step=4).astype(np.float32)
    par = np.mean([pixelkm.KMeans(16, init="k-means||", random_state=s).fit(X).inertia_ for s in range(3)])
    pp = np.mean([pixelkm.KMeans(16, random_state=s).fit(X).inertia_ for s in range(3)])
    assert par <= 1.02 * pp
