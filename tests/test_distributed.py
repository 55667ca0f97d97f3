"""pixelkm.distributed: a 2-process gloo run spawned from the test equals the single-process fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import make_blobs

import pixelkm
import pixelkm.distributed

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)

SPLIT = 520  # rank 0 holds rows [0, 520), rank 1 the rest: unequal shards on purpose


def data():
    X = make_blobs(900, 3, 5, seed=100, spread=1.5)
    X[700] += 40.0  # an outlier on rank 1: the point that the empty cluster must take from the other rank
    w = np.random.default_rng(0).uniform(0.2, 3.0, 900)
    far = X[:5].copy()
    far[4] = 1e3  # a center that is empty at the first step: the relocation gathers candidates from both ranks
    return X, w, far


def _worker(rank, world, rendezvous, out):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        X, w, far = data()
        part = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
        shard, wshard = torch.from_numpy(X[part]), torch.from_numpy(w[part])
        run = pixelkm.distributed.kmeans
        results = {
            "kmeans++": run(shard, 5, random_state=3),
            "weighted_far_init": run(shard, 5, init=torch.from_numpy(far), sample_weight=wshard, tol=0),
            "relocation_step": run(shard, 5, init=torch.from_numpy(far), sample_weight=wshard, max_iter=1),
            "spherical": run(shard, 5, random_state=4, spherical=True),
            "fixed": run(shard, 5, random_state=3, fixed_iterations=True, max_iter=40),
            "sampled": run(shard, 5, random_state=5, init_sample_size=300, tol=0),
            "float32": run(shard.float(), 5, random_state=3),
            "n_init": run(shard, 5, random_state=6, n_init=3, tol=0),
        }
        stream = pixelkm.distributed.fit_stream
        np_shard, np_w = X[part], w[part]
        chunks = [np_shard[i : i + 100] for i in range(0, len(np_shard), 100)]  # each rank streams its shard
        for name, fitted in (
            ("stream_far_init", stream(chunks, 5, init=far, sample_weight=np_w, tol=0, device="cpu")),
            ("stream_kmeans++", stream(np_shard, 5, random_state=7, device="cpu", coreset_size=400)),
        ):
            results[name] = (torch.from_numpy(fitted.centers), fitted.inertia, fitted.n_iter)
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    torch.multiprocessing.spawn(_worker, args=(2, str(tmp / "rendezvous"), str(tmp)), nprocs=2, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(2)]


def check_equal(ranks, name, single, rtol=1e-10):
    (c0, l0, i0), (c1, l1, i1) = ranks[0][name], ranks[1][name]
    assert torch.equal(c0, c1), "every rank must hold the same centers"
    assert float(i0) == float(i1)
    c, labels, inertia = single
    torch.testing.assert_close(c0, c, rtol=rtol, atol=rtol)
    assert torch.equal(torch.cat([l0, l1]), labels)
    assert float(i0) == pytest.approx(float(inertia), rel=rtol)


def test_distributed_kmeanspp_equals_single_process(ranks):
    X, _, _ = data()
    check_equal(ranks, "kmeans++", pixelkm.kmeans(torch.from_numpy(X), 5, random_state=3))
    check_equal(ranks, "fixed", pixelkm.kmeans(torch.from_numpy(X), 5, random_state=3, max_iter=40))
    check_equal(ranks, "float32", pixelkm.kmeans(torch.from_numpy(X).float(), 5, random_state=3), rtol=1e-5)


def test_distributed_empty_cluster_and_weights_equal_single_process(ranks):
    X, w, far = data()
    single = pixelkm.kmeans(
        torch.from_numpy(X), 5, init=torch.from_numpy(far), sample_weight=torch.from_numpy(w), tol=0
    )
    check_equal(ranks, "weighted_far_init", single)
    # one step, where the empty cluster takes rank 1's outlier (a full run could wash out a wrong choice)
    kw = {"init": torch.from_numpy(far), "sample_weight": torch.from_numpy(w), "max_iter": 1}
    single = pixelkm.kmeans(torch.from_numpy(X), 5, **kw)
    check_equal(ranks, "relocation_step", single)
    torch.testing.assert_close(single[0][4], torch.from_numpy(X[700]))
    # the relocated cluster is not stuck at the far point
    assert float(ranks[0]["weighted_far_init"][0][4].abs().max()) < 100


def test_distributed_spherical_equals_single_process(ranks):
    X, _, _ = data()
    check_equal(ranks, "spherical", pixelkm.kmeans(torch.from_numpy(X), 5, random_state=4, spherical=True))


def test_distributed_sampled_init_agrees_and_is_a_lloyd_fixed_point(ranks):
    X, _, _ = data()
    (c0, l0, i0), (c1, l1, _) = ranks[0]["sampled"], ranks[1]["sampled"]
    assert torch.equal(c0, c1)
    # converged with tol=0, i.e. labels unchanged: one more single-process Lloyd step from these centers
    # gives the same centers and labels
    c, labels, inertia = pixelkm.kmeans(torch.from_numpy(X), 5, init=c0, max_iter=1)
    torch.testing.assert_close(c, c0, rtol=1e-10, atol=1e-10)
    assert torch.equal(torch.cat([l0, l1]), labels)
    assert float(i0) == pytest.approx(inertia, rel=1e-10)


def test_distributed_n_init_equals_single_process(ranks):
    X, _, _ = data()
    check_equal(ranks, "n_init", pixelkm.kmeans(torch.from_numpy(X), 5, random_state=6, n_init=3, tol=0))


def test_distributed_streaming_equals_single_process_stream(ranks):
    """Each rank streams its shard in chunks: the result is the streamed fit of all the rows in rank order (an
    empty cluster at the first step takes the globally farthest row, found among both ranks' candidates)."""
    X, w, far = data()
    single = pixelkm.fit_stream(X, 5, init=far, sample_weight=w, tol=0, device="cpu", chunk_rows=100)
    (c0, i0, n0), (c1, i1, n1) = ranks[0]["stream_far_init"], ranks[1]["stream_far_init"]
    assert torch.equal(c0, c1) and i0 == i1 and n0 == n1 == single.n_iter
    np.testing.assert_allclose(c0.numpy(), single.centers, rtol=1e-10, atol=1e-10)
    assert i0 == pytest.approx(single.inertia, rel=1e-10)
    # the in-memory fit from the same start is the oracle of the stream
    ref = pixelkm.kmeans(X, 5, init=far, sample_weight=w, tol=0)
    np.testing.assert_allclose(c0.numpy(), ref[0], rtol=1e-9, atol=1e-9)


def test_distributed_streaming_kmeanspp_init(ranks):
    """A string init over the coreset that both ranks draw: every rank ends with the same centers, a fixed point
    of Lloyd's iteration on all the rows, of an inertia close to the in-memory fit's."""
    X, _, _ = data()
    (c0, i0, _), (c1, i1, _) = ranks[0]["stream_kmeans++"], ranks[1]["stream_kmeans++"]
    assert torch.equal(c0, c1) and i0 == i1
    c, _, _ = pixelkm.kmeans(X, 5, init=c0.numpy(), max_iter=1)
    np.testing.assert_allclose(c, c0.numpy(), rtol=1e-3, atol=1e-2)  # converged (tol=1e-4): at most a tiny step
    best = pixelkm.kmeans(X, 5, random_state=0, n_init=5)[2]
    assert i0 <= 1.05 * best
