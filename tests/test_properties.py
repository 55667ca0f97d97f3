"""Property-based tests (hypothesis): every input ends in a valid result or a clear ValueError/TypeError."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pixelkm

# PIXELKM_HYPOTHESIS_EXAMPLES=2000 runs a thorough search; CI runs 150 cases per pass property and a third of that
# for whole fits (each is up to 3 inits x 50 iterations).
EXAMPLES = int(os.environ.get("PIXELKM_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIT_SETTINGS = settings(SETTINGS, max_examples=max(1, EXAMPLES // 3))
#: feature counts drawn: each is a compiled variant of the CPU kernels per dtype (about 2 s of compile each on a
#: clean checkout); the kernels' code does not depend on d otherwise, so a few widths cover it
WIDTHS = (1, 2, 3, 5)
DTYPES = ["uint8", "float16", "bfloat16", "float32", "float64"]


@st.composite
def datasets(draw, max_n: int = 60, max_d: int = 6):
    """(X tensor, k, weights or None): random shapes and dtypes, duplicates, constant data, odd layouts."""
    n = draw(st.integers(1, max_n))
    d = draw(st.sampled_from([v for v in WIDTHS if v <= max_d]))
    k = draw(st.integers(1, n))
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["normal", "constant", "duplicates", "scaled", "integers"]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if kind == "normal":
        a = rng.normal(size=(n, d))
    elif kind == "constant":
        a = np.full((n, d), rng.normal())
    elif kind == "duplicates":
        base = rng.normal(size=(max(1, n // 4), d))
        a = base[rng.integers(0, len(base), size=n)]
    elif kind == "scaled":
        exps = {"float64": [-200, -30, -8, 0, 4, 8, 200], "float32": [-25, -3, 0, 2, 20]}
        exp = draw(st.sampled_from(exps.get(dtype, [-3, 0, 2])))  # float16/bfloat16 hold no more than this
        a = rng.normal(size=(n, d)) * 10.0**exp + draw(st.sampled_from([0.0, 10.0**exp * 50]))
    else:
        a = rng.integers(0, 256, size=(n, d)).astype(np.float64)
    if dtype == "uint8":
        a = np.clip(np.abs(a) * 40, 0, 255)
    X = torch.from_numpy(a).to(getattr(torch, dtype))
    layout = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    if layout == "transposed":
        X = X.t().contiguous().t()
    elif layout == "strided":
        X = torch.repeat_interleave(X, 2, dim=0)[::2]
    weights = None
    if draw(st.booleans()):
        w = rng.uniform(0, 3, size=n)
        w[rng.random(n) < 0.2] = 0.0
        if w.sum() == 0:
            w[0] = 1.0
        weights = torch.from_numpy(w)
    return X, k, weights


def recomputed_inertia(X, centers, labels, w):
    x = X.double()
    diff = x - centers.double()[labels]
    per = (diff * diff).sum(1)
    return float(per.sum() if w is None else (per * w.double()).sum())


@SETTINGS
@given(datasets())
def test_assign_update_properties(data):
    X, k, w = data
    g = torch.Generator().manual_seed(k)
    C = X[torch.randperm(X.shape[0], generator=g)[:k]].double()
    try:
        res = pixelkm.assign_update(X, C.to(torch.float64 if X.dtype == torch.float64 else torch.float32), w)
    except ValueError as e:  # only data out of the compute dtype's range may be refused
        assert "overflow" in str(e) or "underflow" in str(e)
        return
    n = X.shape[0]
    assert res.labels.shape == (n,) and res.labels.dtype == torch.int64
    assert int(res.labels.min()) >= 0 and int(res.labels.max()) < k
    assert torch.isfinite(res.min_sq_dist).all() and (res.min_sq_dist >= 0).all()
    total = n if w is None else float(w.sum())
    assert float(res.counts.double().sum()) == pytest.approx(total, rel=1e-5)
    # every point's distance is the minimum over centers, up to float rounding of the expansion
    full = ((X.double()[:, None, :] - C.double()[None]) ** 2).sum(-1)
    scale = float(full.max()) + float((X.double() ** 2).sum(1).max()) + 1e-300
    eps = 1e-12 if X.dtype == torch.float64 else 1e-5
    chosen = full.gather(1, res.labels[:, None])[:, 0]
    assert (chosen <= full.min(1).values + eps * scale).all()
    # sums are the (weighted) sums of the points carrying each label
    ww = torch.ones(n, dtype=torch.float64) if w is None else w.double()
    ref = torch.zeros(k, X.shape[1], dtype=torch.float64).index_add_(0, res.labels, X.double() * ww[:, None])
    tol = eps * (float((X.double().abs() * ww[:, None]).sum()) + 1e-300)
    assert torch.allclose(res.sums.double(), ref, rtol=eps * 10, atol=tol)


@FIT_SETTINGS
@given(
    datasets(max_n=40, max_d=4),
    st.sampled_from(["k-means++", "random"]),
    st.integers(1, 3),
    st.sampled_from(["lloyd", "hamerly"]),
)
def test_kmeans_properties(data, init, n_init, algorithm):
    X, k, w = data
    km = pixelkm.KMeans(k, init=init, n_init=n_init, random_state=0, max_iter=50, algorithm=algorithm)
    try:
        km.fit(X, sample_weight=w)
    except ValueError as e:  # only data out of the compute dtype's range may be refused
        assert "overflow" in str(e) or "underflow" in str(e)
        return
    C = km.cluster_centers_
    assert C.shape == (k, X.shape[1]) and torch.isfinite(C).all()
    labels = km.labels_
    assert int(labels.min()) >= 0 and int(labels.max()) < k
    expected = recomputed_inertia(X, C, labels, w)
    assert km.inertia_ == pytest.approx(expected, rel=1e-4, abs=1e-6 * (expected + float(X.double().abs().max()) ** 2))
    assert km.n_iter_ >= 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@given(n=st.integers(1, 20), d=st.integers(1, 4), seed=st.integers(0, 1000))
@SETTINGS
def test_non_finite_is_rejected(bad, n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[rng.integers(n), rng.integers(d)] = bad
    with pytest.raises(ValueError, match="NaN|inf"):
        pixelkm.KMeans(1).fit(X)
    with pytest.raises(ValueError, match="NaN|inf"):
        pixelkm.assign_update(X, np.zeros((1, d)))


@SETTINGS
@given(n=st.integers(2, 20), seed=st.integers(0, 1000))
def test_negative_weights_are_rejected(n, seed):
    rng = np.random.default_rng(seed)
    w = rng.uniform(0, 1, n)
    w[rng.integers(n)] = -0.5
    with pytest.raises(ValueError, match="non-negative"):
        pixelkm.KMeans(1).fit(rng.normal(size=(n, 2)), sample_weight=w)


def full_and_bounded(X, k, w, seed, algorithm, **kw):
    """Fits with full passes and with ``algorithm``'s bounds from the same start (None: the data overflows)."""
    init = X[torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed))[:k]]
    fits = []
    for algo in ("lloyd", algorithm):
        km = pixelkm.KMeans(k, init=init, tol=0.0, max_iter=30, algorithm=algo, **kw)
        try:
            fits.append(km.fit(X, sample_weight=w))
        except ValueError as e:
            assert "overflow" in str(e) or "underflow" in str(e)
            return None
    return fits


@SETTINGS
@given(datasets(max_n=60, max_d=4), st.integers(0, 2**31 - 1))
def test_bounds_give_the_iterates_of_full_passes(data, seed):
    """Hamerly's bounds against full passes from the same start, in float64 (where ties are exact ties)."""
    X, k, w = data
    fits = full_and_bounded(X.double(), k, w, seed, "hamerly")
    if fits is None:
        return
    full, bounds = fits
    assert torch.equal(bounds.labels_, full.labels_)
    assert bounds.n_iter_ == full.n_iter_
    torch.testing.assert_close(bounds.cluster_centers_, full.cluster_centers_, rtol=1e-9, atol=1e-12)


@SETTINGS
@given(datasets(max_n=60, max_d=6), st.integers(0, 2**31 - 1))
def test_yinyang_gives_the_fit_of_full_passes_bit_for_bit(data, seed):
    """Yinyang's bounds on the cpu backend against its full passes from the same start, in every dtype and layout:
    the same labels, centers, iterations and inertia, bit for bit."""
    X, k, w = data
    fits = full_and_bounded(X, k, w, seed, "yinyang", backend="cpu")
    if fits is None:
        return
    full, bounds = fits
    assert torch.equal(bounds.labels_, full.labels_)
    assert bounds.n_iter_ == full.n_iter_
    assert torch.equal(bounds.cluster_centers_, full.cluster_centers_)
    assert bounds.inertia_ == full.inertia_
