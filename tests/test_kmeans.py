"""KMeans / kmeans() against scikit-learn (the oracle) and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_blobs
from sklearn.cluster import KMeans as SKKMeans

import pixelkm

FLOAT_CASES = [
    pytest.param(np.float64, 1e-6, id="float64"),
    pytest.param(np.float32, 1e-4, id="float32"),
]


def sk_fit(X, k, init, w=None, **kw):
    return SKKMeans(k, init=init, n_init=1, algorithm="lloyd", **kw).fit(X, sample_weight=w)


@pytest.mark.parametrize("dtype, rtol", FLOAT_CASES)
@pytest.mark.parametrize("n, d, k, seed", [(3000, 2, 5, 0), (2000, 5, 12, 1), (500, 1, 3, 2)])
def test_exact_oracle_blobs(dtype, rtol, n, d, k, seed):
    X = make_blobs(n, d, k, seed).astype(dtype)
    init = X[np.random.default_rng(seed).choice(n, k, replace=False)]
    ours = pixelkm.KMeans(k, init=init, max_iter=100).fit(X)
    ref = sk_fit(X, k, init, max_iter=100)
    if dtype == np.float64:
        np.testing.assert_array_equal(ours.labels_, ref.labels_)
        assert ours.n_iter_ == ref.n_iter_
    else:  # float32 rounding may flip points on a cluster boundary
        assert (ours.labels_ == ref.labels_).mean() > 0.995
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=rtol)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=rtol * 10, atol=rtol * 10)
    assert ours.cluster_centers_.dtype == dtype


@pytest.mark.parametrize("name", ["kodim03.png", "kodim13.png", "kodim23.png"])
def test_exact_oracle_photo(photo_pixels, name):
    X = photo_pixels(name, step=4).astype(np.float64)
    init = X[np.random.default_rng(1).choice(len(X), 8, replace=False)]
    ours = pixelkm.KMeans(8, init=init, max_iter=50, tol=0).fit(X)
    ref = sk_fit(X, 8, init, max_iter=50, tol=0)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)
    # the same photo as uint8 pixels (no float copy) gives the same fit within float32 rounding
    ours8 = pixelkm.KMeans(8, init=init, max_iter=50, tol=0).fit(photo_pixels(name, step=4))
    assert ours8.inertia_ == pytest.approx(ref.inertia_, rel=1e-4)


@pytest.mark.parametrize("name", ["kodim05.png", "kodim20.png"])
def test_kmeanspp_quality_photo(photo_pixels, name):
    X = photo_pixels(name, step=4).astype(np.float32)
    ours = np.mean([pixelkm.KMeans(16, random_state=s).fit(X).inertia_ for s in range(5)])
    ref = np.mean([SKKMeans(16, n_init=1, random_state=s).fit(X).inertia_ for s in range(5)])
    assert ours <= 1.02 * ref


def test_kmeanspp_quality_blobs():
    X = make_blobs(4000, 4, 20, seed=7, spread=2.0)
    ours = np.mean([pixelkm.KMeans(20, random_state=s).fit(X).inertia_ for s in range(5)])
    ref = np.mean([SKKMeans(20, n_init=1, random_state=s).fit(X).inertia_ for s in range(5)])
    assert ours <= 1.02 * ref


def test_kmeanspp_picks_data_points_and_weights():
    X = make_blobs(500, 3, 4, seed=2)
    w = np.zeros(500)
    w[:50] = 1.0
    km = pixelkm.KMeans(4, random_state=0, max_iter=1).fit(X, sample_weight=w)
    assert np.isfinite(km.cluster_centers_).all()
    from pixelkm.engine.init import kmeans_plusplus

    _, idx = kmeans_plusplus(
        torch.from_numpy(X)[None], 4, torch.from_numpy(w)[None], torch.Generator().manual_seed(0), torch.float64
    )
    assert (idx < 50).all(), "zero-weight points must never be chosen"
    assert len(set(idx[0].tolist())) == 4


def test_integer_weights_equal_repeated_rows():
    X = make_blobs(400, 3, 5, seed=3)
    reps = np.random.default_rng(0).integers(1, 4, size=400)
    init = X[:5]
    a = pixelkm.KMeans(5, init=init).fit(X, sample_weight=reps.astype(float))
    b = pixelkm.KMeans(5, init=init).fit(np.repeat(X, reps, axis=0))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-10)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-10)
    np.testing.assert_array_equal(np.repeat(a.labels_, reps), b.labels_)


def test_zero_weights_equal_dropping_rows():
    X = make_blobs(400, 3, 5, seed=4)
    w = np.ones(400)
    w[::3] = 0
    init = X[1:6]
    a = pixelkm.KMeans(5, init=init).fit(X, sample_weight=w)
    b = pixelkm.KMeans(5, init=init).fit(X[w > 0])
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-10)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-10)


def test_weighted_matches_sklearn():
    X = make_blobs(1000, 2, 4, seed=5)
    w = np.random.default_rng(1).uniform(0.1, 5, size=1000)
    init = X[:4]
    ours = pixelkm.KMeans(4, init=init).fit(X, sample_weight=w)
    ref = sk_fit(X, 4, init, w=w)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)


def test_empty_cluster_is_relocated_to_farthest_point():
    # Center 2 is far from everything: it gets no point at the first step and must move to the
    # point farthest from its center (x=10), leaving no NaN and no center at the origin.
    X = np.array([[0.0], [0.1], [0.2], [10.0], [10.1]])
    init = np.array([[0.0], [10.0], [1000.0]])
    km = pixelkm.KMeans(3, init=init).fit(X)
    c = np.sort(km.cluster_centers_[:, 0])
    assert np.isfinite(c).all()
    assert np.bincount(km.labels_, minlength=3).min() >= 1
    ref = sk_fit(X, 3, init)
    np.testing.assert_allclose(np.sort(ref.cluster_centers_[:, 0]), c)
    assert km.inertia_ == pytest.approx(ref.inertia_)


def test_duplicates_and_k_equals_n():
    X = np.array([[1.0, 1.0]] * 5 + [[2.0, 2.0]] * 5)
    km = pixelkm.KMeans(2, random_state=0).fit(X)
    assert km.inertia_ == 0.0
    assert sorted(map(tuple, km.cluster_centers_)) == [(1.0, 1.0), (2.0, 2.0)]
    X = make_blobs(12, 3, 3, seed=1)
    km = pixelkm.KMeans(12, random_state=0).fit(X)
    assert km.inertia_ == pytest.approx(0.0, abs=1e-10)
    assert sorted(km.labels_.tolist()) == list(range(12))
    # more clusters than distinct points: centers stay finite
    km = pixelkm.KMeans(4, random_state=0).fit(np.ones((6, 2)))
    assert np.isfinite(km.cluster_centers_).all() and km.inertia_ == 0.0


def test_k_equals_one_is_the_mean():
    X = make_blobs(300, 4, 3, seed=9)
    w = np.random.default_rng(0).uniform(0, 2, 300)
    km = pixelkm.KMeans(1).fit(X, sample_weight=w)
    np.testing.assert_allclose(km.cluster_centers_[0], np.average(X, axis=0, weights=w), rtol=1e-12)
    assert km.inertia_ == pytest.approx(float((w * ((X - km.cluster_centers_[0]) ** 2).sum(1)).sum()))


def test_determinism_and_seeds():
    X = make_blobs(2000, 3, 8, seed=11)
    a = pixelkm.KMeans(8, random_state=42, n_init=3).fit(X)
    b = pixelkm.KMeans(8, random_state=42, n_init=3).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    c1 = pixelkm.kmeans(torch.from_numpy(X), 8, random_state=g1)[0]
    c2 = pixelkm.kmeans(torch.from_numpy(X), 8, random_state=g2)[0]
    assert torch.equal(c1, c2)
    torch.manual_seed(0)
    c3 = pixelkm.kmeans(X, 8)[0]
    torch.manual_seed(0)
    c4 = pixelkm.kmeans(X, 8)[0]
    np.testing.assert_array_equal(c3, c4)


def test_every_bit_of_an_int_seed_counts():
    # torch's CPU generator keeps 32 bits of its seed: seeds from 2**32 up are mixed down, so 7 and 7 + 2**32
    # (and 0, 2**32, 2**40, 2**63) give different fits; seeds below 2**32 are torch's own
    from pixelkm._validation import resolve_generator

    X = make_blobs(1500, 3, 8, seed=13)
    fits = [pixelkm.KMeans(8, init="random", n_init=1, random_state=s).fit(X) for s in (7, 7 + 2**32, 0, 2**32)]
    assert not np.array_equal(fits[0].cluster_centers_, fits[1].cluster_centers_)
    assert not np.array_equal(fits[2].cluster_centers_, fits[3].cluster_centers_)
    seeds = {resolve_generator(s).initial_seed() for s in (0, 2**32, 2**40, 2**63, 2**64 - 1)}
    assert len(seeds) == 5 and all(s < 2**32 for s in seeds)
    assert resolve_generator(2**32 - 1).initial_seed() == 2**32 - 1
    assert resolve_generator(12345).initial_seed() == 12345
    # a batch from a large seed s: problem i is the single fit with s + i
    Xb = np.stack([X[:500], X[500:1000]])
    c, _, _ = pixelkm.kmeans(Xb, 4, init="random", random_state=2**40)
    for i in range(2):
        ci, _, _ = pixelkm.kmeans(Xb[i], 4, init="random", random_state=2**40 + i)
        np.testing.assert_array_equal(c[i], ci)


def test_n_init_with_an_init_array_runs_once_and_says_so():
    X = make_blobs(300, 2, 3, seed=1)
    with pytest.warns(RuntimeWarning, match="performing only one init instead of n_init=4"):
        km = pixelkm.KMeans(3, init=X[:3], n_init=4).fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, pixelkm.KMeans(3, init=X[:3]).fit(X).cluster_centers_)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixelkm.KMeans(3, init=X[:3], n_init=1).fit(X)
        pixelkm.KMeans(3, init=X[:3]).fit(X)  # n_init="auto"


def test_n_init_keeps_best():
    X = make_blobs(1500, 2, 10, seed=12, spread=0.3)
    singles = [pixelkm.KMeans(10, init="random", random_state=s).fit(X).inertia_ for s in range(3)]
    best = pixelkm.KMeans(10, init="random", n_init=6, random_state=0).fit(X).inertia_
    assert best <= min(singles) + 1e-9 or best <= np.median(singles)


def test_tol_stops_early_and_tol_zero_runs_to_labels_fixed_point():
    X = make_blobs(3000, 2, 6, seed=13, spread=3.0)
    init = X[:6]
    loose = pixelkm.KMeans(6, init=init, tol=1e-1).fit(X)
    tight = pixelkm.KMeans(6, init=init, tol=0).fit(X)
    ref_loose = sk_fit(X, 6, init, tol=1e-1)
    assert loose.n_iter_ == ref_loose.n_iter_
    assert loose.n_iter_ < tight.n_iter_
    np.testing.assert_array_equal(
        tight.labels_, pixelkm.KMeans(6, init=tight.cluster_centers_, max_iter=1).fit(X).labels_
    )


def test_outputs_follow_input():
    X = make_blobs(200, 3, 3, seed=14)
    km = pixelkm.KMeans(3, random_state=0).fit(torch.from_numpy(X).float())
    assert isinstance(km.cluster_centers_, torch.Tensor) and km.cluster_centers_.dtype == torch.float32
    assert isinstance(km.labels_, torch.Tensor) and km.labels_.dtype == torch.int64
    assert isinstance(km.predict(X), np.ndarray)
    assert isinstance(km.predict(torch.from_numpy(X)), torch.Tensor)
    c, lab, inertia = pixelkm.kmeans(X, 3, random_state=0)
    assert isinstance(c, np.ndarray) and c.dtype == np.float64 and isinstance(inertia, float)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_input_dtype(dtype):
    X = torch.from_numpy(make_blobs(600, 3, 4, seed=15, scale=100) + 128).clamp(0, 255).to(dtype)
    Xd = X.double()
    init = Xd[:4]
    ours = pixelkm.KMeans(4, init=init).fit(X)
    ref = sk_fit(Xd.numpy(), 4, init.numpy())
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-4)
    want = torch.float64 if dtype == torch.float64 else torch.float32
    assert ours.cluster_centers_.dtype == want


def test_predict_transform_score_match_sklearn():
    X = make_blobs(800, 3, 4, seed=16)
    Y = make_blobs(100, 3, 4, seed=17)
    init = X[:4]
    ours = pixelkm.KMeans(4, init=init).fit(X)
    ref = sk_fit(X, 4, init)
    np.testing.assert_array_equal(ours.predict(Y), ref.predict(Y))
    np.testing.assert_allclose(ours.transform(Y), ref.transform(Y), rtol=1e-9)
    assert ours.score(Y) == pytest.approx(ref.score(Y), rel=1e-9)
    np.testing.assert_array_equal(ours.fit_predict(X), ref.labels_)
    np.testing.assert_allclose(ours.fit_transform(X), ref.transform(X), rtol=1e-9)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_assigned_or_edited_centers_are_the_ones_predict_uses(as_tensor):
    # scikit-learn's predict/transform/score read cluster_centers_: an assignment (or an edit in place) after
    # the fit counts (the centers of the fit were kept aside and an assignment was silently ignored)
    X = make_blobs(300, 2, 2, seed=9)
    Xin = torch.from_numpy(X) if as_tensor else X
    km = pixelkm.KMeans(2, random_state=0).fit(Xin)
    sk = SKKMeans(2, random_state=0, n_init=1).fit(X)
    new = np.array([[100.0, 100.0], [-100.0, -100.0]])
    km.cluster_centers_ = torch.from_numpy(new) if as_tensor else new
    sk.cluster_centers_ = new
    np.testing.assert_array_equal(np.asarray(km.predict(Xin)), sk.predict(X))
    np.testing.assert_allclose(np.asarray(km.transform(Xin)), sk.transform(X), rtol=1e-12)
    assert km.score(Xin) == pytest.approx(sk.score(X), rel=1e-12)
    km.cluster_centers_[0] = km.cluster_centers_[0] * 0 + 5.0  # in place
    np.testing.assert_array_equal(
        np.asarray(km.predict(Xin)), np.argmin(((X[:, None] - [[5.0, 5.0], new[1]]) ** 2).sum(-1), 1)
    )
    km.cluster_centers_ = np.zeros((2, 3))
    with pytest.raises(ValueError, match="cluster_centers_ has 3 features, but KMeans was fitted on 2"):
        km.predict(Xin)
    km.cluster_centers_ = np.array([[np.nan, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="cluster_centers_"):
        km.predict(Xin)


def test_batched_kmeans_equals_loop():
    Xs = np.stack([make_blobs(300, 3, 4, seed=s) for s in range(3)])
    inits = Xs[:, :4].copy()
    c, lab, inertia = pixelkm.kmeans(Xs, 4, init=inits)
    assert c.shape == (3, 4, 3) and lab.shape == (3, 300) and inertia.shape == (3,)
    for b in range(3):
        cb, lb, ib = pixelkm.kmeans(Xs[b], 4, init=inits[b])
        np.testing.assert_allclose(c[b], cb, rtol=1e-12)
        np.testing.assert_array_equal(lab[b], lb)
        assert inertia[b] == pytest.approx(ib, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, X, match, exc",
    [
        (dict(n_clusters=0), np.zeros((5, 2)), "n_clusters must be >= 1", ValueError),
        (dict(n_clusters=6), np.zeros((5, 2)), "n_clusters=6 must be <= n_samples=5", ValueError),
        (dict(n_clusters=2.5), np.zeros((5, 2)), "n_clusters must be an int", TypeError),
        (dict(n_clusters=2, init="kmeans"), np.zeros((5, 2)), "init must be one of", ValueError),
        (
            dict(n_clusters=2, init=np.zeros((3, 2))),
            np.zeros((5, 2)),
            r"init array must have shape \(2, 2\)",
            ValueError,
        ),
        (dict(n_clusters=2, max_iter=0), np.zeros((5, 2)), "max_iter must be >= 1", ValueError),
        (dict(n_clusters=2, tol=-1), np.zeros((5, 2)), "tol must be", ValueError),
        (dict(n_clusters=2, backend="nope"), np.zeros((5, 2)), "unknown backend", ValueError),
        (dict(n_clusters=2), np.zeros((5,)), "Reshape your data", ValueError),
        (dict(n_clusters=2), np.zeros((2, 5, 2)), "2-D", ValueError),
        (dict(n_clusters=2), np.array([[1.0, np.nan]] * 3), "NaN", ValueError),
        (dict(n_clusters=2), np.array([[1.0, np.inf]] * 3), "inf", ValueError),
        (dict(n_clusters=2), np.array([["a", "b"]] * 3), "numeric", TypeError),
    ],
)
def test_bad_parameters_and_input(kwargs, X, match, exc):
    with pytest.raises(exc, match=match):
        pixelkm.KMeans(**kwargs).fit(X)


def test_bad_weights_and_predict_features():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        pixelkm.KMeans(2).fit(X, sample_weight=np.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        pixelkm.KMeans(2).fit(X, sample_weight=-np.ones(5))
    with pytest.raises(pixelkm.NotFittedError):
        pixelkm.KMeans(2).predict(X)
    # finite weights that overflow the compute dtype are named as such (they were "NaN or inf")
    with pytest.raises(ValueError, match=r"sample_weight has values too large for torch.float32 \(up to 1e\+300\)"):
        pixelkm.KMeans(2).fit(X.astype(np.float32), sample_weight=np.full(5, 1e300))
    # the init's shape as given, and the batch's shape named
    with pytest.raises(ValueError, match=r"shape \(3, 2\) \(n_clusters, n_features\), got \(2, 2\)$"):
        pixelkm.KMeans(3, init=np.zeros((2, 2))).fit(make_blobs(20, 2, 2, seed=0))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 2\) \(batch, n_clusters, n_features\), got \(3, 2\)$"):
        pixelkm.kmeans(np.stack([make_blobs(20, 2, 2, seed=0)] * 2), 3, init=np.zeros((3, 2)))
    km = pixelkm.KMeans(2, random_state=0).fit(make_blobs(20, 2, 2, seed=0))
    with pytest.raises(ValueError, match="X has 3 features, but KMeans is expecting 2 features"):
        km.predict(np.zeros((4, 3)))


def test_sklearn_citizen():
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X = make_blobs(300, 3, 3, seed=18)
    km = pixelkm.KMeans(3, random_state=0, tol=1e-3)
    assert clone(km).get_params() == km.get_params()
    pipe = Pipeline([("scale", StandardScaler()), ("km", km)]).fit(X)
    assert pipe.predict(X).shape == (300,)
    gs = GridSearchCV(pixelkm.KMeans(random_state=0), {"n_clusters": [2, 3, 4]}, cv=3).fit(X)
    assert gs.best_params_["n_clusters"] == 4  # score = -inertia, which always prefers more clusters


def test_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    check_estimator(
        pixelkm.KMeans(random_state=0),
        expected_failed_checks={
            # Weighted k-means++ draws from the cumulative weights; repeated rows give a different cumulative
            # array, so the same seed picks different (equally valid) initial centers. The equivalence itself
            # holds for a fixed init: see test_integer_weights_equal_repeated_rows.
            "check_sample_weight_equivalence_on_dense_data": "random init differs between weights and repeats",
        },
    )


@pytest.mark.parametrize(
    "dtype, weights, compute",
    [
        (torch.uint8, "integer", torch.float32),
        (torch.float32, "integer", torch.float32),
        (torch.uint8, None, torch.float32),
        (torch.float64, "float64", torch.float64),
        (torch.uint8, "float64", torch.float64),
        (torch.float16, "integer", torch.float32),
        (torch.bfloat16, None, torch.float64),
    ],
)
def test_cpu_plusplus_kernel_draws_what_the_torch_path_draws(monkeypatch, dtype, weights, compute):
    """The numba greedy k-means++ picks exactly the rows of the torch path (the oracle), uint8 pixels included
    (read as they are and converted exactly, as the torch path converts them), float16/bfloat16 rows (converted
    into the kernel's copy), float32 weights read as float32,
    float64 weights (not integers) as float64, unit weights; past one 4096-point block and a partial 256-point
    sub-block, in float32 and float64."""
    import pixelkm.engine.init as init

    rng = np.random.default_rng(5)
    X = torch.from_numpy(rng.integers(0, 256, size=(9000, 3)).astype(np.uint8)).to(dtype)[None]
    w = {
        "integer": torch.from_numpy(rng.integers(1, 9, size=9000).astype(np.float32))[None],
        "float64": torch.from_numpy(rng.random(9000) + 0.1)[None],
        None: None,
    }[weights]
    got_c, got = init.kmeans_plusplus(X, 12, w, torch.Generator().manual_seed(3), compute)
    monkeypatch.setattr(init, "_cpu_plusplus", lambda *args: None)
    ref_c, ref = init.kmeans_plusplus(X, 12, w, torch.Generator().manual_seed(3), compute)
    assert torch.equal(got, ref)
    assert torch.equal(got_c, ref_c) and got_c.dtype == compute


@pytest.mark.parametrize("d, store", [(12, True), (40, False), (40, True), (128, True)])
def test_cpu_plusplus_kernel_draws_what_the_torch_path_draws_with_many_features(monkeypatch, d, store):
    """Beyond 16 features the kernel keeps its direct differences where the torch path takes the expansion in
    float64: on small integers both are exact, so the picks are the torch path's (the oracle) row for row; also
    where the kernel keeps each step's candidate distances for its update (``store``: rows larger than the cache,
    forced here), with its bounding boxes (d = 12) and without."""
    import pixelkm.engine.init as init

    monkeypatch.setattr(init, "_PP_STORE_BYTES", 0 if store else 1 << 62)
    rng = np.random.default_rng(7)
    X = torch.from_numpy(rng.integers(0, 8, size=(9000, d)).astype(np.float32))[None]
    w = torch.from_numpy(rng.integers(1, 5, size=9000).astype(np.float32))[None]
    got_c, got = init.kmeans_plusplus(X, 20, w, torch.Generator().manual_seed(8), torch.float32)
    monkeypatch.setattr(init, "_cpu_plusplus", lambda *args: None)
    ref_c, ref = init.kmeans_plusplus(X, 20, w, torch.Generator().manual_seed(8), torch.float32)
    assert torch.equal(got, ref)
    assert torch.equal(got_c, ref_c)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_cpu_plusplus_morton_order_draws_the_torch_paths_draws_on_the_reordered_rows(monkeypatch, dtype):
    """From 64 clusters (d <= 3) the kernel takes the rows in Morton order: its picks are the torch path's picks
    (the oracle) on the rows in that order, mapped back to the caller's rows."""
    import pixelkm.engine.init as init

    rng = np.random.default_rng(6)
    X = torch.from_numpy(rng.integers(0, 256, size=(9000, 3)).astype(np.uint8)).to(dtype)
    w = torch.from_numpy(rng.integers(1, 9, size=9000).astype(np.float32))
    got_c, got = init.kmeans_plusplus(X[None], 64, w[None], torch.Generator().manual_seed(4), torch.float32)
    perm = init.morton_order(X)
    monkeypatch.setattr(init, "_cpu_plusplus", lambda *args: None)
    ref_c, ref = init.kmeans_plusplus(X[perm][None], 64, w[perm][None], torch.Generator().manual_seed(4), torch.float32)
    assert torch.equal(got[0], perm[ref[0]])
    assert torch.equal(got_c, ref_c)
    assert got.unique().numel() == 64


def test_morton_order_by_hand():
    """Z-order of a 2 x 2 x 2 cube's corners (uint8: the top bits of the 10-bit scale) and of float rows scaled
    between their minimum and maximum; equal codes keep their order."""
    from pixelkm.engine.init import morton_order

    corners = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)], dtype=np.uint8)
    # code bit order: feature 0 lowest, so (r, g, b) -> r + 2 g + 4 b
    want = np.argsort([(r > 0) + 2 * (g > 0) + 4 * (b > 0) for r, g, b in corners], kind="stable")
    assert np.array_equal(corners[morton_order(torch.from_numpy(corners)).numpy()].tolist(), corners[want].tolist())
    f = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    assert morton_order(torch.from_numpy(f)).tolist() == [0, 4, 2, 3, 1]
    with pytest.raises(ValueError, match="up to 3 features"):
        morton_order(torch.zeros(2, 4))


# ------------------------------------------------------------------ max_points_per_cluster (a capped, subsampled fit)


def capped_oracle(X, k, m, seed, w=None, **kw):
    """The fit that ``max_points_per_cluster=m`` must equal: the same uniform draw of k * m rows from the fit's
    generator (in increasing order), then a plain fit on them with the rest of that generator."""
    from pixelkm._validation import resolve_generator
    from pixelkm.engine.subsample import random_subset

    gen = resolve_generator(seed)
    rows = random_subset(len(X), k * m, gen).sort().values.numpy()
    return rows, pixelkm.KMeans(k, random_state=gen, **kw).fit(X[rows], sample_weight=None if w is None else w[rows])


@pytest.mark.parametrize("weighted", [False, True])
def test_max_points_per_cluster_fits_a_uniform_subsample(weighted):
    X = make_blobs(20_000, 6, 8, seed=3).astype(np.float32)
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(X)) if weighted else None
    km = pixelkm.KMeans(8, random_state=5, max_points_per_cluster=50).fit(X, sample_weight=w)
    rows, sub = capped_oracle(X, 8, 50, 5, w)
    assert len(np.unique(rows)) == 400 and rows.min() >= 0 and rows.max() < len(X)
    np.testing.assert_array_equal(km.cluster_centers_, sub.cluster_centers_)
    assert km.n_iter_ == sub.n_iter_
    # labels and inertia of every sample against the centers found
    assert km.labels_.shape == (len(X),)
    np.testing.assert_array_equal(km.labels_, km.predict(X))
    np.testing.assert_allclose(km.inertia_, -km.score(X, sample_weight=w), rtol=1e-6)


def test_max_points_per_cluster_draws_among_the_weighted_rows():
    # zero weights add nothing: the draw is among the rows of positive weight (a draw of zero-weight rows only
    # gave two equal centers far from the three weighted rows, with a "duplicate points" warning)
    from pixelkm._validation import resolve_generator
    from pixelkm.engine.subsample import random_subset

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 3))
    X[:3] += 10
    w = np.zeros(5000)
    w[:3] = 1.0
    capped = pixelkm.KMeans(2, random_state=0, max_points_per_cluster=5).fit(X, sample_weight=w)
    full = pixelkm.KMeans(2, random_state=0).fit(X, sample_weight=w)  # 3 weighted rows <= 2 * 5: no draw
    np.testing.assert_array_equal(capped.cluster_centers_, full.cluster_centers_)
    assert capped.inertia_ == pytest.approx(full.inertia_) and capped.inertia_ < 1
    # more weighted rows than the cap: a uniform draw among them, then the fit on those rows
    w = np.where(rng.random(5000) < 0.5, rng.uniform(0.5, 2.0, 5000), 0.0)
    km = pixelkm.KMeans(3, random_state=4, max_points_per_cluster=40).fit(X, sample_weight=w)
    gen = resolve_generator(4)
    positive = np.nonzero(w > 0)[0]
    rows = positive[random_subset(len(positive), 120, gen).sort().values.numpy()]
    sub = pixelkm.KMeans(3, random_state=gen).fit(X[rows], sample_weight=w[rows])
    np.testing.assert_array_equal(km.cluster_centers_, sub.cluster_centers_)


def test_max_points_per_cluster_that_does_not_bind_changes_nothing():
    X = make_blobs(2_000, 3, 4, seed=4).astype(np.float32)
    a = pixelkm.KMeans(4, random_state=1).fit(X)
    b = pixelkm.KMeans(4, random_state=1, max_points_per_cluster=500).fit(X)  # 4 * 500 = n: every row
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.inertia_ == b.inertia_ and a.n_iter_ == b.n_iter_


def test_max_points_per_cluster_on_uint8_pixels_and_spherical():
    rng = np.random.default_rng(6)
    px = rng.integers(0, 256, (30_000, 3), dtype=np.uint8)
    km = pixelkm.KMeans(5, random_state=2, max_points_per_cluster=100).fit(px)
    _, sub = capped_oracle(px, 5, 100, 2)
    np.testing.assert_array_equal(km.cluster_centers_, sub.cluster_centers_)
    np.testing.assert_array_equal(km.labels_, km.predict(px))
    np.testing.assert_allclose(km.inertia_, -km.score(px), rtol=1e-6)
    X = make_blobs(5_000, 8, 4, seed=7).astype(np.float32)
    sph = pixelkm.KMeans(4, random_state=0, spherical=True, max_points_per_cluster=100).fit(X)
    _, sub = capped_oracle(X, 4, 100, 0, spherical=True)
    np.testing.assert_allclose(sph.cluster_centers_, sub.cluster_centers_, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(sph.labels_, sph.predict(X))
    np.testing.assert_allclose(sph.inertia_, -sph.score(X), rtol=1e-5)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "many", True])
def test_max_points_per_cluster_rejects_bad_values(bad):
    X = make_blobs(500, 2, 3, seed=0)
    with pytest.raises((TypeError, ValueError), match="max_points_per_cluster"):
        pixelkm.KMeans(3, max_points_per_cluster=bad).fit(X)


def test_max_points_per_cluster_in_kmeans_function():
    X = make_blobs(3_000, 2, 3, seed=1).astype(np.float32)
    c, lab, inertia = pixelkm.kmeans(X, 3, random_state=4, max_points_per_cluster=20)
    km = pixelkm.KMeans(3, random_state=4, max_points_per_cluster=20).fit(X)
    np.testing.assert_array_equal(c, km.cluster_centers_)
    np.testing.assert_array_equal(lab, km.labels_)
    assert inertia == km.inertia_
    with pytest.raises(ValueError, match="max_points_per_cluster is for one problem"):
        pixelkm.kmeans(np.stack([X, X]), 3, max_points_per_cluster=20)
