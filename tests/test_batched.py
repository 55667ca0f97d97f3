"""Batched k-means: b problems in one call against a loop of single fits (the oracle), masks, sync-free loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_blobs
from sklearn.cluster import KMeans as SKKMeans

import pixelkm
from pixelkm.engine import sources as _sources
from pixelkm.engine.batched import lloyd_from
from pixelkm.engine.relocate import ordered_farthest, relocate_empty_clusters


def stack_blobs(b, n, d, k, seed):
    return np.stack([make_blobs(n, d, k, seed=seed + i, spread=1.5) for i in range(b)])


def assert_same_fit(batched, singles, rtol=1e-12):
    c, lab, inertia = batched
    for i, (cs, ls, js) in enumerate(singles):
        np.testing.assert_array_equal(lab[i][: len(ls)], ls, err_msg=f"problem {i}")
        np.testing.assert_allclose(c[i], cs, rtol=rtol, atol=1e-12, err_msg=f"problem {i}")
        assert inertia[i] == pytest.approx(js, rel=rtol), f"problem {i}"


@pytest.mark.parametrize("init, n_init", [("k-means++", 1), ("k-means++", 3), ("random", 2)], ids=str)
def test_batched_seed_equals_loop_with_seed_plus_i(init, n_init):
    X = stack_blobs(5, 400, 3, 6, seed=20)
    batched = pixelkm.kmeans(X, 6, init=init, n_init=n_init, random_state=7)
    singles = [pixelkm.kmeans(X[i], 6, init=init, n_init=n_init, random_state=7 + i) for i in range(5)]
    assert_same_fit(batched, singles)
    # problems differ: the seeds really are per problem (the same data with one seed would repeat the init)
    same_data = np.repeat(X[:1], 3, axis=0)
    c, _, _ = pixelkm.kmeans(same_data, 6, init=init, n_init=1, max_iter=1, random_state=7)
    assert not np.array_equal(c[0], c[1])


def test_batched_seed_list_and_shared_generator():
    X = stack_blobs(3, 300, 2, 4, seed=30)
    seeds = [11, 5, 11]
    batched = pixelkm.kmeans(X, 4, random_state=seeds)
    assert_same_fit(batched, [pixelkm.kmeans(X[i], 4, random_state=s) for i, s in enumerate(seeds)])
    # one torch.Generator is drawn problem after problem, like a loop of single fits sharing it
    Xt = torch.from_numpy(X)
    batched = pixelkm.kmeans(Xt, 4, random_state=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    singles = [pixelkm.kmeans(Xt[i], 4, random_state=g) for i in range(3)]
    assert_same_fit([t.numpy() for t in batched], [(c.numpy(), lab.numpy(), j) for c, lab, j in singles])
    with pytest.raises(ValueError, match="2 seeds for a batch of 3"):
        pixelkm.kmeans(X, 4, random_state=[1, 2])


def test_batched_explicit_init_and_sklearn():
    X = stack_blobs(4, 500, 5, 5, seed=40)
    inits = np.stack([X[i, np.random.default_rng(i).choice(500, 5, replace=False)] for i in range(4)])
    c, lab, inertia = pixelkm.kmeans(X, 5, init=inits, tol=0)
    for i in range(4):
        ref = SKKMeans(5, init=inits[i], n_init=1, tol=0, algorithm="lloyd").fit(X[i])
        np.testing.assert_array_equal(lab[i], ref.labels_)
        np.testing.assert_allclose(c[i], ref.cluster_centers_, rtol=1e-10)
        assert inertia[i] == pytest.approx(ref.inertia_, rel=1e-10)


def test_empty_clusters_are_handled_per_problem():
    # problem 0: center 2 is far from everything and empty at the first step; problem 1: no empty cluster
    X = np.array(
        [
            [[0.0], [0.1], [0.2], [10.0], [10.1], [10.3]],
            [[0.0], [1.0], [5.0], [6.0], [9.0], [10.0]],
        ]
    )
    init = np.array([[[0.0], [10.0], [1000.0]], [[0.0], [5.0], [9.0]]])
    c, lab, inertia = pixelkm.kmeans(X, 3, init=init)
    for i in range(2):
        ref = SKKMeans(3, init=init[i], n_init=1, algorithm="lloyd").fit(X[i])
        np.testing.assert_allclose(np.sort(c[i, :, 0]), np.sort(ref.cluster_centers_[:, 0]))
        assert inertia[i] == pytest.approx(ref.inertia_)
        single = pixelkm.kmeans(X[i], 3, init=init[i])
        np.testing.assert_array_equal(lab[i], single[1])


def test_several_empty_clusters_with_ties_take_far_points_in_order():
    # three far centers go empty at once; the farthest points are tied: the lowest index goes first
    X = np.array([[[0.0], [0.0], [4.0], [4.0], [4.0], [4.0], [1.0]]])
    init = np.array([[[0.0], [100.0], [200.0], [300.0]]])
    res = pixelkm.assign_update(torch.from_numpy(X[0]), torch.from_numpy(init[0]))
    res = relocate_empty_clusters(
        pixelkm.AssignUpdateResult(res.labels[None], res.min_sq_dist[None], res.sums[None], res.counts[None]),
        torch.from_numpy(X),
        None,
    )
    # clusters 1, 2, 3 take points 2, 3, 4 (distance 16, ties by index); cluster 0 keeps points 0, 1, 5, 6
    np.testing.assert_array_equal(res.counts[0].numpy(), [4, 1, 1, 1])
    np.testing.assert_array_equal(res.sums[0, :, 0].numpy(), [5, 4, 4, 4])


def test_ordered_farthest_is_exact_with_ties():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        n = int(torch.randint(4, 40, (1,), generator=gen))
        K = int(torch.randint(1, n + 1, (1,), generator=gen))
        dist = torch.randint(0, 4, (3, n), generator=gen).double()
        dist[0, ::3] = -torch.inf
        vals, idx = ordered_farthest(dist, K, offset=100)
        for r in range(3):
            want = sorted(range(n), key=lambda j: (-dist[r, j].item(), j))[:K]
            assert (idx[r] - 100).tolist() == want
            assert torch.equal(vals[r], dist[r, want])


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_mask_equals_fits_of_the_unpadded_problems(weighted):
    sizes = [300, 120, 257]
    n = max(sizes)
    rng = np.random.default_rng(1)
    X = rng.uniform(-1e3, 1e3, size=(3, n, 2))  # padding: large finite garbage that must be ignored
    mask = np.zeros((3, n), dtype=bool)
    w = rng.uniform(0.5, 2.0, size=(3, n)) if weighted else None
    for i, m in enumerate(sizes):
        X[i, :m] = make_blobs(m, 2, 5, seed=50 + i)
        mask[i, :m] = True
    c, lab, inertia = pixelkm.kmeans(X, 5, mask=mask, sample_weight=w, random_state=4, n_init=2)
    singles = [
        pixelkm.kmeans(X[i, :m], 5, sample_weight=None if w is None else w[i, :m], random_state=4 + i, n_init=2)
        for i, m in enumerate(sizes)
    ]
    assert_same_fit((c, lab, inertia), singles)
    for i, m in enumerate(sizes):
        assert (lab[i, m:] == -1).all()
    # the mask need not be a prefix: the points of each problem scattered among the padding
    perm = rng.permutation(n)
    Xp, mp, wp = X[:, perm], mask[:, perm], None if w is None else w[:, perm]
    c, lab, inertia = pixelkm.kmeans(Xp, 5, mask=mp, sample_weight=wp, random_state=4, n_init=2)
    for i in range(3):
        cs, ls, js = pixelkm.kmeans(
            Xp[i][mp[i]], 5, sample_weight=None if w is None else wp[i][mp[i]], random_state=4 + i, n_init=2
        )
        np.testing.assert_array_equal(lab[i][mp[i]], ls)
        assert (lab[i][~mp[i]] == -1).all()
        np.testing.assert_allclose(c[i], cs, rtol=1e-12)
        assert inertia[i] == pytest.approx(js, rel=1e-12)


def test_mask_errors():
    X = np.zeros((2, 5, 2))
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 5\)"):
        pixelkm.kmeans(X, 2, mask=np.ones((2, 4), dtype=bool))
    with pytest.raises(TypeError, match="mask must be boolean"):
        pixelkm.kmeans(X, 2, mask=np.ones((2, 5)))
    mask = np.ones((2, 5), dtype=bool)
    mask[1, 1:] = False
    with pytest.raises(ValueError, match="n_clusters=2 must be <= n_samples=1"):
        pixelkm.kmeans(X, 2, mask=mask)
    with pytest.raises(ValueError, match="mask is for batched X"):
        pixelkm.kmeans(X[0], 2, mask=mask[0])


# Ops that make the host wait for the device on CUDA: scalar reads and data-dependent output shapes.
SYNCING_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "bincount", "repeat_interleave", "item")


class SyncAudit(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if any(name.startswith(op) for op in SYNCING_OPS):
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def test_fixed_iteration_loop_has_no_host_sync_and_equals_the_default_loop(monkeypatch):
    X = torch.from_numpy(stack_blobs(3, 400, 3, 6, seed=60))
    mask = torch.ones(3, 400, dtype=torch.bool)
    mask[1, 300:] = False
    w = mask.double()
    init = X[:, :6].clone()
    init[0, 5] = 1e4  # an empty cluster in problem 0 at the first step
    tol = _sources.mean_feature_variance(X, mask) * 1e-4
    ref = lloyd_from(X, init, w, max_iter=40, tol=tol, mask=mask)
    assert int(ref.n_iter.max()) < 40  # so the sync-free loop runs past convergence
    # The backend's pass is audited apart (it is not this module's code); everything else in the loop must not sync.
    real = _sources.run_assign_update

    def backend_pass(*args, **kwargs):
        with torch.utils._python_dispatch._disable_current_modes():
            return real(*args, **kwargs)

    monkeypatch.setattr(_sources, "run_assign_update", backend_pass)
    with SyncAudit() as audit:
        fixed = lloyd_from(X, init, w, max_iter=40, tol=tol, mask=mask, sync=False)
    assert audit.seen == []
    with SyncAudit() as audit:  # the audit does see a sync where there is one
        lloyd_from(X, init, w, max_iter=2, tol=tol, mask=mask, sync=True)
    assert "_local_scalar_dense" in audit.seen
    assert torch.equal(fixed.labels, ref.labels)
    assert torch.equal(fixed.centers, ref.centers)
    assert torch.equal(fixed.n_iter, ref.n_iter)
    assert torch.equal(fixed.inertia, ref.inertia)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: CUDA's sync debug mode")
def test_fixed_iteration_loop_does_not_sync_on_cuda():
    X = torch.from_numpy(stack_blobs(4, 2000, 3, 8, seed=70)).float().cuda()
    init = X[:, :8].clone()
    tol = torch.zeros(4, dtype=torch.float64, device="cuda")
    lloyd_from(X, init, None, max_iter=2, tol=tol, sync=False)  # warm-up: lazy CUDA initializations
    torch.cuda.set_sync_debug_mode("error")
    try:
        lloyd_from(X, init, None, max_iter=5, tol=tol, sync=False)  # the backend "auto" picks
    finally:
        torch.cuda.set_sync_debug_mode("default")
