"""Yinyang's bounds in the cpu backend against its full Lloyd passes (the oracle, bit for bit) and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import count_calls, make_blobs
from sklearn.cluster import KMeans as SKKMeans

import pixelkm
from pixelkm._result import PassExtras
from pixelkm.backends import get_backend
from pixelkm.backends.cpu import bounds as cpu_bounds
from pixelkm.engine import bounds as engine_bounds


def fit(X, k, algorithm, sample_weight=None, **kw):
    return pixelkm.KMeans(k, algorithm=algorithm, backend="cpu", **kw).fit(X, sample_weight=sample_weight)


def assert_same_fit(a, b):
    """The same iterates: labels, centers (bit for bit: the same sums), iterations and inertia."""
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.n_iter_ == b.n_iter_
    assert a.inertia_ == b.inertia_


def full_pass(X: torch.Tensor, C: torch.Tensor):
    """The cpu backend's full pass (labels, float64 sums and counts): the oracle of every step."""
    res = get_backend("cpu").assign_update(X.unsqueeze(0), C.unsqueeze(0), None, extras=PassExtras(bounds=True))
    return res.labels[0], res.sums[0], res.counts[0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint8])
@pytest.mark.parametrize("k", [12, 70])  # one group; seven groups
def test_same_iterates_as_full_passes(dtype, k):
    X = make_blobs(3000, 20, 16, seed=k, spread=2.0)
    X = np.clip(X * 6 + 128, 0, 255).round().astype(dtype) if dtype == np.uint8 else X.astype(dtype)
    init = X[np.random.default_rng(k).choice(len(X), k, replace=False)]
    full = fit(X, k, "lloyd", init=init, tol=0, max_iter=200)
    bounded = fit(X, k, "yinyang", init=init, tol=0, max_iter=200)
    assert_same_fit(bounded, full)
    assert bounded.n_iter_ > 3
    if dtype == np.float64:  # and scikit-learn's exact Lloyd
        ref = SKKMeans(k, init=init, n_init=1, tol=0, max_iter=200, algorithm="lloyd").fit(X)
        np.testing.assert_array_equal(bounded.labels_, ref.labels_)
        assert bounded.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
        assert bounded.n_iter_ == ref.n_iter_


@pytest.mark.parametrize("threads", ["1", "2"])
def test_every_step_equals_a_full_pass_with_ties(monkeypatch, threads):
    """Step by step against the full pass: integer data with exact ties, a duplicated center (the lower index wins)
    and centers moved as Lloyd moves them; the same with one and two threads."""
    monkeypatch.setenv("PIXELKM_CPU_THREADS", threads)
    rng = np.random.default_rng(4)
    X = torch.from_numpy(rng.integers(0, 6, size=(9000, 17)).astype(np.float32))
    C = X[torch.from_numpy(rng.choice(len(X), 80, replace=False))].clone()
    C[41] = C[7]  # a tie between two centers for every point near them
    state = cpu_bounds.YinyangBounds(X, None, 80, torch.float32)
    moved = []
    for _ in range(8):
        labels, sums, counts, n_changed = state.step(C)
        ref_labels, ref_sums, ref_counts = full_pass(X, C)
        assert torch.equal(labels, ref_labels)
        assert torch.equal(sums, ref_sums) and torch.equal(counts, ref_counts)
        assert not bool((labels == 41).any())  # the duplicate's twin has the lower index
        moved.append(n_changed)
        C = torch.where((counts > 0)[:, None], (sums / counts.clamp(min=1)[:, None]).float(), C)
        C[41] = C[7]
    assert moved[0] == len(X) and moved[-1] < moved[1]


def test_weighted_and_empty_clusters_refilled():
    """Weighted points; two initial centers far from every point (empty clusters, refilled: the bounds restart)."""
    X = make_blobs(4000, 24, 6, seed=5).astype(np.float32)
    w = np.random.default_rng(5).uniform(0.5, 3.0, len(X)).astype(np.float32)
    init = np.concatenate([X[:70], np.full((2, 24), 1e3, np.float32)])
    full = fit(X, 72, "lloyd", init=init, tol=0, sample_weight=w)
    bounded = fit(X, 72, "yinyang", init=init, tol=0, sample_weight=w)
    assert_same_fit(bounded, full)


def test_auto_takes_yinyang_beyond_small_d(monkeypatch):
    """auto: Yinyang on the cpu backend beyond SMALL_D features from YINYANG_MIN_K centers (YINYANG_MIN_K_WIDE from
    YINYANG_WIDE_D features) and MIN_ROWS rows, while its bounds fit in the memory budget; full passes otherwise (and
    the same result either way)."""
    from pixelkm.backends.cpu import backend as cpu_backend

    assert (cpu_backend.YINYANG_MIN_K, cpu_backend.YINYANG_MIN_K_WIDE, cpu_backend.YINYANG_WIDE_D) == (128, 64, 128)
    calls = count_calls(monkeypatch, cpu_bounds, "YinyangBounds")
    monkeypatch.setattr(engine_bounds, "MIN_ROWS", 2000)
    X = make_blobs(3000, 16, 8, seed=2).astype(np.float32)
    init = X[:128]
    auto = fit(X, 128, "auto", init=init, tol=0)
    assert calls == [1]
    assert_same_fit(auto, fit(X, 128, "lloyd", init=init, tol=0))
    fit(X[:1500], 128, "auto", init=init)  # below MIN_ROWS
    fit(X[:, :14], 128, "auto", init=init[:, :14])  # SMALL_D features: full passes
    fit(X, 127, "auto", init=init[:127])  # below YINYANG_MIN_K
    assert calls == [1]
    wide = make_blobs(3000, 128, 8, seed=3).astype(np.float32)
    fit(wide, 63, "auto", init=wide[:63])  # below YINYANG_MIN_K_WIDE
    assert calls == [1]
    fit(wide, 64, "auto", init=wide[:64])
    fit(wide[:, :127], 64, "auto", init=wide[:64, :127])  # below YINYANG_WIDE_D: YINYANG_MIN_K
    assert calls == [1, 1]
    monkeypatch.setattr(engine_bounds, "memory_budget", lambda: 3000 * cpu_bounds.yinyang_bytes_per_row(128, 16) - 1)
    fit(X, 128, "auto", init=init)  # bounds beyond the budget
    assert calls == [1, 1]


def test_yinyang_errors():
    X = make_blobs(500, 20, 3, seed=1).astype(np.float32)
    with pytest.raises(ValueError, match="algorithm='yinyang' cannot run here: it runs on the cpu backend"):
        pixelkm.KMeans(3, algorithm="yinyang", backend="torch").fit(X)
    with pytest.raises(ValueError, match="algorithm='yinyang' cannot run here: .*not a batch"):
        pixelkm.kmeans(np.stack([X, X]), 3, algorithm="yinyang", backend="cpu")


def test_group_centers():
    """Every group is used, the groups are numbered from 0, and nearby centers share a group."""
    rng = np.random.default_rng(0)
    sites = rng.normal(size=(5, 8)) * 100
    C = (sites[np.arange(50) % 5] + rng.normal(size=(50, 8))).astype(np.float32)
    g = cpu_bounds.group_centers(C, 5)
    assert sorted(set(g.tolist())) == list(range(g.max() + 1))
    for s in range(5):  # the centers around one site: one group
        assert len(set(g[np.arange(50) % 5 == s].tolist())) == 1
    assert cpu_bounds.group_centers(C, 1).tolist() == [0] * 50


def test_final_pass_from_the_bounds(monkeypatch):
    """The fit's final labels and inertia come from the bounds (no full pass after the loop), and equal a full
    pass's: the same labels, distances, sums and counts, bit for bit."""
    X = torch.from_numpy(make_blobs(5000, 20, 10, seed=9).astype(np.float32))
    C = X[:40].clone()
    state = cpu_bounds.YinyangBounds(X, None, 40, torch.float32)
    for _ in range(3):
        _, sums, counts, _ = state.step(C)
        C = (sums / counts.clamp(min=1)[:, None]).float()
    got = state.final(C)
    ref = get_backend("cpu").assign_update(X.unsqueeze(0), C.unsqueeze(0), None)
    for a, b in zip(
        (got.labels, got.min_sq_dist, got.sums, got.counts), (ref.labels, ref.min_sq_dist, ref.sums, ref.counts)
    ):
        assert a.dtype == b.dtype and torch.equal(a, b)
    from pixelkm.engine import sources

    calls = count_calls(monkeypatch, sources.BatchSource, "final")
    init = X[:40].numpy()
    bounded = fit(X.numpy(), 40, "yinyang", init=init, tol=0)
    assert calls == []
    assert_same_fit(bounded, fit(X.numpy(), 40, "lloyd", init=init, tol=0))
    assert calls == [1]
