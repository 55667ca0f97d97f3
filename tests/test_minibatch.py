"""MiniBatchKMeans against scikit-learn's: the same steps exactly, and the same quality on blobs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_blobs
from sklearn.cluster import MiniBatchKMeans as SKMiniBatchKMeans

from pixelkm.estimators.minibatch import MiniBatchKMeans


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_partial_fit_steps_equal_sklearn(weighted):
    X = make_blobs(4000, 3, 6, seed=0)
    w = np.random.default_rng(0).uniform(0.5, 2.0, 4000) if weighted else None
    init = X[:6].copy()
    ours = MiniBatchKMeans(6, init=init, reassignment_ratio=0.0)
    ref = SKMiniBatchKMeans(6, init=init, n_init=1, reassignment_ratio=0.0)
    for s in range(0, 4000, 400):
        ws = None if w is None else w[s : s + 400]
        ours.partial_fit(X[s : s + 400], sample_weight=ws)
        ref.partial_fit(X[s : s + 400], sample_weight=ws)
        np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-10)
        np.testing.assert_array_equal(ours.labels_, ref.labels_)
        assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)
    assert ours.n_steps_ == ref.n_steps_ == 10


def test_partial_fit_reassigns_a_starved_center_like_sklearn():
    X = make_blobs(2000, 2, 4, seed=1)
    init = np.vstack([X[:3], [[1e3, 1e3]]])  # the last center never wins a point
    for est in (MiniBatchKMeans(4, init=init, random_state=0), SKMiniBatchKMeans(4, init=init, random_state=0)):
        for s in range(0, 2000, 200):
            est.partial_fit(X[s : s + 200])
        assert np.abs(est.cluster_centers_).max() < 100, type(est).__module__  # moved onto the data


@pytest.mark.parametrize("k, batch_size", [(8, 256), (12, 1024)])
def test_fit_quality_matches_sklearn_on_blobs(k, batch_size):
    X = make_blobs(20000, 4, k, seed=k, spread=1.5)
    ours = [MiniBatchKMeans(k, batch_size=batch_size, random_state=s).fit(X) for s in range(5)]
    ref = [SKMiniBatchKMeans(k, batch_size=batch_size, random_state=s).fit(X) for s in range(5)]
    assert np.mean([o.inertia_ for o in ours]) <= 1.05 * np.mean([r.inertia_ for r in ref])
    for o in ours:
        assert o.labels_.shape == (20000,) and o.cluster_centers_.shape == (k, 4)
        assert 1 <= o.n_iter_ <= 100 and o.n_steps_ <= 100 * 20000 // batch_size


def test_fit_samples_batches_by_weight():
    X = make_blobs(6000, 2, 3, seed=5)
    X[:3000] += 1000.0  # far away, and weight zero: never drawn into a batch
    w = np.r_[np.zeros(3000), np.ones(3000)]
    est = MiniBatchKMeans(3, batch_size=256, random_state=0, init_size=2000).fit(X, sample_weight=w)
    ref = MiniBatchKMeans(3, batch_size=256, random_state=0, init_size=2000).fit(X[3000:])
    assert np.abs(est.cluster_centers_).max() < 500
    assert est.inertia_ == pytest.approx(ref.inertia_, rel=0.05)


def test_fit_tol_and_no_improvement_stop_early():
    X = make_blobs(20000, 2, 5, seed=3)
    est = MiniBatchKMeans(5, batch_size=512, max_iter=50, random_state=0, max_no_improvement=3).fit(X)
    assert est.n_steps_ < 50 * 20000 // 512
    est = MiniBatchKMeans(5, batch_size=512, max_iter=50, random_state=0, max_no_improvement=None, tol=1e-2).fit(X)
    assert est.n_steps_ < 50 * 20000 // 512


def test_sklearn_protocol_and_errors():
    from sklearn.base import clone

    from pixelkm import NotFittedError

    X = make_blobs(600, 3, 3, seed=4)
    est = MiniBatchKMeans(3, batch_size=100, random_state=0)
    assert clone(est).get_params() == est.get_params()
    assert "batch_size=100" in repr(est)
    with pytest.raises(NotFittedError):
        est.predict(X)
    est.fit(X)
    np.testing.assert_array_equal(est.predict(X), est.labels_)
    assert est.transform(X).shape == (600, 3)
    assert est.score(X) == pytest.approx(-est.inertia_, rel=1e-6)
    with pytest.raises(ValueError, match="expecting 3 features"):
        est.partial_fit(X[:, :2])
    with pytest.raises(ValueError, match="n_samples=2 should be >= n_clusters=3"):
        MiniBatchKMeans(3).fit(X[:2])
