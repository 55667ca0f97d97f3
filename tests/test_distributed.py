"""pixelkm.distributed: a 2-process gloo run spawned from the test equals the single-process fit."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import partial

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


# --- shards that the ranks disagree on: the same clear error on every rank, never a hang or a gloo abort ---


def _error_cases(rank):
    """Calls made on every rank in this order, each with a shard that rank 1 (or rank 0) holds differently."""
    X, w, far = data()
    mine, wmine = (X[:SPLIT], w[:SPLIT]) if rank == 0 else (X[SPLIT:], w[SPLIT:])
    r0, r1 = rank == 0, rank == 1
    nan = mine.copy()
    if r1:
        nan[-1, 0] = np.nan
    stream = partial(pixelkm.distributed.fit_stream, init=far, device="cpu", chunk_rows=100)
    kmeans = partial(pixelkm.distributed.kmeans, init=torch.from_numpy(far))
    return {
        "kmeans_dtype": lambda: kmeans(torch.from_numpy(mine).float() if r0 else torch.from_numpy(mine), 5),
        "stream_dtype": lambda: stream(mine.astype(np.float32) if r0 else mine, 5),
        "stream_dtype_chunks": lambda: stream([mine.astype(np.float32) if r0 else mine], 5),
        "stream_features": lambda: stream(mine[:, :2] if r1 else mine, 5),
        "stream_empty": lambda: stream(mine[:0] if r1 else mine, 5),
        "stream_empty_chunk_rank0": lambda: stream([mine[:0] if r0 else mine], 5, init="k-means++", random_state=0),
        "stream_nan": lambda: stream(nan, 5),
        "stream_nan_first_pass_lloyd": lambda: stream(nan, 5, tol=0),  # no moments pass: the first Lloyd pass
        "stream_negative_weight": lambda: stream(mine, 5, sample_weight=-wmine if r1 else wmine),
        "kmeans_empty": lambda: kmeans(torch.from_numpy(mine[:0] if r1 else mine), 5),
        "after": lambda: stream(mine, 5, tol=0).inertia,  # the ranks are still in step
    }


def _failing_worker(rank, world, rendezvous, out):
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        got = {}
        for name, call in _error_cases(rank).items():
            try:
                got[name] = ("ok", repr(call()))
            except Exception as exc:  # what each rank raised is the result
                got[name] = (type(exc).__name__, str(exc))
            torch.save(got, f"{out}/errors{rank}.pt")  # as they come: a rank that dies leaves what it had
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def errors(tmp_path_factory):
    """{case: [(exception type, message) of rank 0, of rank 1]}, and how the spawn ended when it did not end well
    (within a time limit: a rank left in a collective is killed)."""
    tmp = tmp_path_factory.mktemp("dist_errors")
    ctx = torch.multiprocessing.spawn(
        _failing_worker, args=(2, str(tmp / "rendezvous"), str(tmp)), nprocs=2, join=False
    )
    deadline, failure = time.monotonic() + 240, None
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                failure = "timed out (a rank hung in a collective)"
                break
    except Exception as exc:  # a rank that crashed or aborted
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    per_rank = [torch.load(f) if (f := tmp / f"errors{r}.pt").exists() else {} for r in range(2)]
    return {name: [got.get(name) for got in per_rank] for name in per_rank[0] | per_rank[1]}, failure


def outcome(errors, name):
    got, failure = errors
    ranks = got.get(name, [None, None])
    assert None not in ranks, f"{name}: a rank did not finish ({failure})"
    return ranks


def assert_same_value_error(errors, name, *words):
    (t0, m0), (t1, m1) = outcome(errors, name)
    assert t0 == t1 == "ValueError", (m0, m1)
    assert m0 == m1, "every rank raises the same error"
    for word in words:
        assert word in m0


def test_distributed_mixed_dtypes_refused_on_every_rank(errors):
    """float32 on rank 0, float64 on rank 1: both entry points refuse (the collectives would run on buffers of
    different sizes: silently wrong centers and inertia)."""
    assert_same_value_error(errors, "kmeans_dtype", "pixelkm.distributed.kmeans", "rank 0: float32, rank 1: float64")
    assert_same_value_error(
        errors, "stream_dtype", "pixelkm.distributed.fit_stream", "rank 0: float32, rank 1: float64"
    )
    assert_same_value_error(errors, "stream_dtype_chunks", "rank 0: float32, rank 1: float64")


def test_distributed_stream_feature_counts_agreed(errors):
    assert_same_value_error(errors, "stream_features", "same number of features", "rank 0: 3, rank 1: 2")


def test_distributed_stream_empty_shard_refused_on_every_rank(errors):
    """An empty shard is refused, as distributed.kmeans does: up front when the source counts its rows, after the
    first pass otherwise (a list of chunks, here rank 0's)."""
    assert_same_value_error(errors, "stream_empty", "at least one row", "rank 1: 0")
    (t0, m0), (t1, m1) = outcome(errors, "stream_empty_chunk_rank0")
    assert t0 == t1 == "ValueError", (m0, m1)
    assert "this rank's shard has no rows" in m0
    assert "rank 0: ValueError: this rank's shard has no rows" in m1


@pytest.mark.parametrize(
    "name, words",
    [
        ("stream_nan", "NaN"),
        ("stream_nan_first_pass_lloyd", "NaN"),
        ("stream_negative_weight", "non-negative"),
        ("kmeans_empty", "0 sample(s)"),
    ],
)
def test_distributed_first_pass_error_raised_on_every_rank(errors, name, words):
    """A check that fails on rank 1 only: rank 1 raises its error, rank 0 a ValueError naming rank 1 and that
    error (instead of a raw gloo error, or a hang in the next collective)."""
    (t0, m0), (t1, m1) = outcome(errors, name)
    assert t1 == "ValueError" and words in m1
    assert t0 == "ValueError", m0
    assert "failed on another rank" in m0 and f"rank 1: ValueError: {m1}" in m0


def test_distributed_ranks_in_step_after_refused_calls(errors):
    (t0, i0), (t1, i1) = outcome(errors, "after")
    assert t0 == t1 == "ok" and i0 == i1
    X, _, far = data()
    assert float(i0) == pytest.approx(pixelkm.fit_stream(X, 5, init=far, tol=0, device="cpu").inertia, rel=1e-10)
