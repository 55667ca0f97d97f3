"""Spherical (cosine) k-means against hand computations and a NumPy oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_blobs

import pixelkm
import pixelkm.nn


def unit(A):
    return A / np.linalg.norm(A, axis=-1, keepdims=True)


def spherical_lloyd_oracle(X, init, max_iter=100):
    """Spherical k-means by the book: unit rows, highest cosine, normalized mean of each cluster."""
    Xn, C = unit(X), unit(init)
    labels = None
    for _ in range(max_iter):
        new = np.argmax(Xn @ C.T, axis=1)
        if labels is not None and (new == labels).all():
            break
        labels = new
        C = np.stack([unit(Xn[labels == j].sum(0)) for j in range(len(C))])
    cos = Xn @ C.T
    return C, cos.argmax(1), float((1 - cos.max(1)).sum())


def test_one_cluster_by_hand():
    # unit rows (1, 0), (0, 1), (1, 1)/sqrt(2): their mean points along (1, 1), so the center is (1, 1)/sqrt(2);
    # cosines 1/sqrt(2), 1/sqrt(2), 1 give the inertia 2 (1 - 1/sqrt(2)) = 2 - sqrt(2)
    X = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    km = pixelkm.KMeans(1, spherical=True).fit(X)
    np.testing.assert_allclose(km.cluster_centers_, [[1 / math.sqrt(2), 1 / math.sqrt(2)]], rtol=1e-12)
    assert km.inertia_ == pytest.approx(2 - math.sqrt(2), rel=1e-12)
    np.testing.assert_allclose(km.transform(X)[:, 0], [1 - 1 / math.sqrt(2), 1 - 1 / math.sqrt(2), 0], atol=1e-12)
    assert km.score(X) == pytest.approx(-(2 - math.sqrt(2)), rel=1e-12)


def test_two_clusters_by_hand():
    # by angle, not by distance: (10, 0) joins (1, 0.1) although (0, 1) and (0.1, 2) are closer to it in space
    X = np.array([[1.0, 0.1], [10.0, 0.0], [0.0, 1.0], [0.1, 2.0]])
    init = np.array([[1.0, 0.0], [0.0, 1.0]])
    c, labels, inertia = pixelkm.kmeans(X, 2, init=init, spherical=True)
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    c0 = unit(unit(X[0]) + unit(X[1]))
    c1 = unit(unit(X[2]) + unit(X[3]))
    np.testing.assert_allclose(c, [c0, c1], rtol=1e-12)
    want = sum(1 - unit(X[i]) @ (c0 if i < 2 else c1) for i in range(4))
    assert inertia == pytest.approx(want, rel=1e-12)
    eu = pixelkm.kmeans(X, 2, init=init)[1]
    assert not np.array_equal(eu, labels)  # Euclidean k-means groups them differently


@pytest.mark.parametrize("seed", [0, 1])
def test_against_numpy_oracle(seed):
    X = make_blobs(600, 10, 5, seed=90 + seed, spread=4.0)
    init = X[np.random.default_rng(seed).choice(600, 5, replace=False)]
    C, labels, inertia = spherical_lloyd_oracle(X, init)
    km = pixelkm.KMeans(5, init=init, tol=0, spherical=True).fit(X)
    np.testing.assert_array_equal(km.labels_, labels)
    np.testing.assert_allclose(km.cluster_centers_, C, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1.0, rtol=1e-12)
    assert km.inertia_ == pytest.approx(inertia, rel=1e-10)
    np.testing.assert_array_equal(km.predict(X * 3.0), labels)  # only directions matter


def test_batched_and_module_spherical():
    X = np.stack([make_blobs(300, 5, 4, seed=95 + i, spread=3.0) for i in range(3)])
    c, lab, inertia = pixelkm.kmeans(X, 4, random_state=2, spherical=True)
    for i in range(3):
        cs, ls, js = pixelkm.kmeans(X[i], 4, random_state=2 + i, spherical=True)
        np.testing.assert_array_equal(lab[i], ls)
        np.testing.assert_allclose(c[i], cs, rtol=1e-12)
        assert inertia[i] == pytest.approx(js, rel=1e-12)
    Xt = torch.from_numpy(X[0])
    km = pixelkm.nn.KMeans(4, random_state=2, spherical=True).fit(Xt)
    assert torch.equal(km.labels_, torch.from_numpy(lab[0]))
    labels, dist = km(Xt)
    assert torch.equal(labels, km.labels_)
    cos = torch.nn.functional.normalize(Xt, dim=1) @ km.centers.T
    torch.testing.assert_close(dist, 1 - cos.max(1).values, rtol=0, atol=1e-12)
    assert float(dist.sum()) == pytest.approx(inertia[0], rel=1e-10)


@pytest.mark.parametrize("dtype, scales", [(np.float64, (1e-13, 1e-20, 1e20)), (np.float32, (1e-13, 1e10))], ids=str)
def test_only_directions_matter_at_any_scale(dtype, scales):
    # rows shorter than 1e-12 came out of torch's normalize (which divides by max(norm, 1e-12)) shorter than 1:
    # a fit of X * 1e-13 differed from that of X, and of X * 1e-20 put every row at the zero vector's distance
    X = make_blobs(2000, 8, 6, seed=7, spread=3.0).astype(dtype)
    init = X[:6].copy()
    ref = pixelkm.KMeans(6, init=init, spherical=True).fit(X)
    for s in scales:
        km = pixelkm.KMeans(6, init=init * dtype(s), spherical=True).fit(X * dtype(s))
        np.testing.assert_array_equal(km.labels_, ref.labels_)
        np.testing.assert_allclose(
            km.cluster_centers_, ref.cluster_centers_, rtol=1e-5 if dtype == np.float32 else 1e-12
        )
        assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-5 if dtype == np.float32 else 1e-10)
        np.testing.assert_array_equal(km.predict(X * dtype(s)), ref.labels_)
    # a row of zeros stays the zero vector: |0 - c|^2 / 2 = 0.5 from every unit center, no NaN
    Z = np.vstack([X, np.zeros((1, 8), dtype)])
    km = pixelkm.KMeans(6, init=init, spherical=True).fit(Z)
    assert np.isfinite(km.cluster_centers_).all() and np.isfinite(km.inertia_)
    np.testing.assert_allclose(km.transform(Z[-1:]), 0.5, rtol=1e-6)
