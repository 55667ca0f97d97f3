"""The fused CPU backend (numba) against the float64 oracle, the torch reference and scikit-learn.

The first run compiles the kernels (a few seconds per dtype and feature count); numba caches them on disk.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pixelkm
from pixelkm._result import PassExtras
from pixelkm.backends import get_backend, select_backend

pytest.importorskip("numba")
from test_assign_update import check_labels, direct, random_data  # noqa: E402  (the shared oracle)

CPU = get_backend("cpu")


def cpu_pass(X, C, w=None, compute_second=False, **kw):
    """One pass of the cpu backend on a single problem, without the batch dimension; with ``compute_second`` the
    batched result, with the bounds of :class:`pixelkm._result.PassExtras` as ``min_sq_upper``/``second_sq_lower``."""
    extras = PassExtras(bounds=True) if compute_second else None
    res = CPU.assign_update(X.unsqueeze(0), C.unsqueeze(0), None if w is None else w.unsqueeze(0), extras=extras, **kw)
    if extras is None:
        return res.squeeze_batch()
    res.min_sq_upper, res.second_sq_lower = extras.min_sq_upper, extras.second_sq_lower
    return res


@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=lambda t: str(t)[6:]
)
@pytest.mark.parametrize("n, d, k", [(5000, 3, 7), (517, 1, 1), (300, 20, 64), (64, 130, 5)])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_matches_direct(dtype, n, d, k, weighted):
    """Labels, distances, sums and counts against the full float64 distance matrix (d = 20 and 130: GEMM path)."""
    X, C = random_data(dtype, n, d, k, seed=n + d + k)
    w = torch.rand(n, dtype=C.dtype) * 3 if weighted else None
    res = pixelkm.assign_update(X, C, w, backend="cpu", chunk_size=97)
    lab, mind, sums, counts, d2 = direct(X, C, w)
    assert res.labels.dtype == torch.int64 and res.sums.dtype == C.dtype
    check_labels(res.labels, lab, d2, rtol=1e-5 if dtype != torch.float64 else 1e-12)
    if dtype == torch.float64 or dtype == torch.uint8:
        assert torch.equal(res.labels, lab)
    same = res.labels == lab
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(res.min_sq_dist.double()[same], mind[same], rtol=tol, atol=tol)
    if bool(same.all()):
        torch.testing.assert_close(res.sums.double(), sums, rtol=tol, atol=tol)
        torch.testing.assert_close(res.counts.double(), counts, rtol=tol, atol=tol)


@pytest.mark.parametrize("d", [3, 130])
def test_uint8_sums_exact_and_equal_to_torch(d):
    X, C = random_data(torch.uint8, 20000, d, 16, seed=4)
    ref = pixelkm.assign_update(X, C, backend="torch")
    res = cpu_pass(X, C, compute_second=True)  # the float64 accumulators
    lab, _, sums, counts, _ = direct(X, C, None)
    assert torch.equal(res.labels[0], lab) and torch.equal(ref.labels, lab)
    assert torch.equal(res.sums[0], sums) and torch.equal(res.counts[0], counts)  # integer sums: exact


@pytest.mark.parametrize("d", [3, 5, 20])
def test_bit_identical_across_threads_and_chunks(d, monkeypatch):
    """Blocks of a fixed size reduced in a fixed order: the same bits with 1 or 2 threads and any chunk size."""
    X, C = random_data(torch.float32, 3 * 4096 + 123, d, 33, seed=d)
    w = torch.rand(X.shape[0])
    runs = []
    for threads, chunk in [("1", None), ("2", 97), ("2", None), ("1", 5000)]:
        monkeypatch.setenv("PIXELKM_CPU_THREADS", threads)
        runs.append(pixelkm.assign_update(X, C, w, backend="cpu", chunk_size=chunk))
    for r in runs[1:]:
        for name in ("labels", "min_sq_dist", "sums", "counts"):
            assert torch.equal(getattr(r, name), getattr(runs[0], name)), name


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float32, torch.float64])
def test_feature_variance_kernel(dtype, monkeypatch):
    """The tolerance's variance on the CPU (two passes of ``kernels.column_sums``): equal to float64 numpy's within
    rounding (uint8: the sums exact), the same bits with 1 and 2 threads, over several blocks and a partial one
    (float16: converted in chunks of one block here)."""
    from pixelkm.backends.cpu import backend as cpu_backend
    from pixelkm.backends.cpu.backend import feature_sums
    from pixelkm.engine import sources

    monkeypatch.setattr(cpu_backend, "CONVERT_ROWS", cpu_backend.K.BLOCK)

    X, _ = random_data(dtype, 3 * 4096 + 77, 9, 1, seed=3)
    x = X.double().numpy()
    runs = []
    for threads in ("1", "2"):
        monkeypatch.setenv("PIXELKM_CPU_THREADS", threads)
        runs.append((feature_sums(X), sources.mean_feature_variance(X.unsqueeze(0), backend=CPU)))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    sums, var = runs[0]
    if dtype == torch.uint8:
        assert torch.equal(sums, torch.from_numpy(x.sum(0)))
    np.testing.assert_allclose(sums.numpy(), x.sum(0), rtol=1e-12)
    np.testing.assert_allclose(float(var[0]), x.var(0).mean(), rtol=1e-12)
    mean = torch.from_numpy(x.mean(0))
    np.testing.assert_allclose(feature_sums(X, mean).numpy(), ((x - x.mean(0)) ** 2).sum(0), rtol=1e-12)


def test_float16_chunkwise_equals_float32():
    """float16 is converted chunk by chunk (whole blocks): the same result as the float32 copy in one go."""
    from pixelkm.backends.cpu import backend as cpu_backend

    X, C = random_data(torch.float16, 3 * cpu_backend.K.BLOCK + 17, 3, 9, seed=2)
    old = cpu_backend.CONVERT_ROWS
    try:
        cpu_backend.CONVERT_ROWS = cpu_backend.K.BLOCK  # several conversion chunks
        a = cpu_pass(X, C, compute_second=True)
    finally:
        cpu_backend.CONVERT_ROWS = old
    b = cpu_pass(X.float(), C, compute_second=True)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.sums, b.sums) and torch.equal(a.counts, b.counts)


@pytest.mark.parametrize("d", [1, 20])
def test_ties_go_to_lowest_index(d):
    X = torch.zeros(3, d, dtype=torch.float64)
    X[:, 0] = torch.tensor([0.0, 1.0, 2.0])
    C = torch.zeros(4, d, dtype=torch.float64)
    C[:, 0] = torch.tensor([1.0, -1.0, 1.0, 3.0])  # x=0 ties 0/1, x=2 ties 0/2/3
    assert pixelkm.assign_update(X, C, backend="cpu").labels.tolist() == [0, 0, 0]
    Xu = torch.tensor([[10, 10, 0], [20, 20, 0]], dtype=torch.uint8)
    Cu = torch.tensor([[15.0, 15.0, 0], [5.0, 5.0, 0], [15.0, 15.0, 0], [25.0, 25.0, 0]])  # each point halfway
    assert pixelkm.assign_update(Xu, Cu, backend="cpu").labels.tolist() == [0, 0]


@pytest.mark.parametrize("d", [3, 40])
def test_outlier_and_far_centers_keep_their_labels(d):
    """Direct differences (and the GEMM path's exact recheck): an outlier at 1e5 in float32 data and centers far
    from the data do not cost the labels their digits (the expansion |x|^2 - 2x.c + |c|^2 would)."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(3000, d, generator=g)
    X[17] = 1e5
    C = 3e4 + torch.randn(6, d, generator=g) * 0.5
    res = pixelkm.assign_update(X, C, backend="cpu")
    lab, mind, *_, d2 = direct(X, C, None)
    check_labels(res.labels, lab, d2, rtol=1e-6)
    C2 = torch.randn(6, d, generator=g)
    C2[0] = 1e5
    res2 = pixelkm.assign_update(X, C2, backend="cpu")
    lab2, *_, d22 = direct(X, C2, None)
    check_labels(res2.labels, lab2, d22, rtol=1e-6)


def test_far_from_origin_keeps_precision():
    g = torch.Generator().manual_seed(0)
    X = 1e6 + torch.randn(500, 2, generator=g, dtype=torch.float64)
    C = 1e6 + torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    res = pixelkm.assign_update(X, C, backend="cpu")
    lab, mind, *_ = direct(X, C, None)
    assert torch.equal(res.labels, lab)
    torch.testing.assert_close(res.min_sq_dist, mind, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("d", [3, 24])
def test_fit_equals_sklearn_lloyd(d):
    """Whole fits in float64 from the same init: scikit-learn's lloyd labels and centers."""
    sk = pytest.importorskip("sklearn.cluster")
    rng = np.random.default_rng(d)
    X = rng.normal(size=(3000, d)) + rng.integers(0, 4, size=(3000, 1)) * 3.0
    init = X[rng.choice(3000, 6, replace=False)]
    ref = sk.KMeans(6, init=init, n_init=1, max_iter=50, tol=0.0, algorithm="lloyd").fit(X)
    km = pixelkm.KMeans(6, init=init, n_init=1, max_iter=50, tol=0.0, algorithm="lloyd", backend="cpu").fit(X)
    assert np.array_equal(np.asarray(km.labels_), ref.labels_)
    np.testing.assert_allclose(np.asarray(km.cluster_centers_), ref.cluster_centers_, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", [5, 20])
def test_outputs_are_overwritten(d):
    """Every output element is written: outputs poisoned beforehand come back with the oracle's values."""
    X, C = random_data(torch.float32, 4096 + 5, d, 9, seed=9)
    n, k = X.shape[0], C.shape[0]
    labels = torch.full((n,), -7, dtype=torch.int64)
    mind = torch.full((n,), float("nan"))
    second = torch.full((n,), float("nan"))
    sums = torch.zeros(k, d, dtype=torch.float64)
    counts = torch.zeros(k, dtype=torch.float64)
    CPU._one(X, C, None, labels, mind, second, sums, counts)
    lab, dist, s, c, d2 = direct(X, C, None)
    check_labels(labels, lab, d2, rtol=1e-5)
    assert not torch.isnan(mind).any() and not torch.isnan(second).any()
    torch.testing.assert_close(mind.double(), d2.gather(1, labels[:, None])[:, 0], rtol=1e-5, atol=1e-4)
    other = d2.scatter(1, labels[:, None], float("inf")).amin(1)
    assert bool((second.double() <= other * (1 + 1e-5) + 1e-4).all())  # a lower bound of the second-nearest


@pytest.mark.parametrize("d", [3, 20])
def test_second_bounds_hold(d):
    X, C = random_data(torch.float32, 2000, d, 12, seed=11)
    res = cpu_pass(X, C, compute_second=True)
    lab, mind, _, _, d2 = direct(X, C, None)
    assert torch.equal(res.labels[0], pixelkm.assign_update(X, C, backend="cpu").labels)
    assert bool((res.min_sq_upper[0].double() >= d2.gather(1, res.labels[0][:, None])[:, 0]).all())
    second = d2.scatter(1, res.labels[0][:, None], float("inf")).amin(1)
    lower = res.second_sq_lower[0].double()
    assert bool((lower <= second).all())
    # and tight: within the rounding slack (d = 20: from the expansion, |x|^2 added back to v)
    torch.testing.assert_close(lower, second, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "X, C, match",
    [
        (np.array([[np.nan, 1.0]]), np.zeros((1, 2)), "NaN"),
        (np.array([[np.inf, 1.0]]), np.zeros((1, 2)), "inf"),
        (np.zeros((0, 3)), np.zeros((2, 3)), "0 sample"),
        (np.zeros((4, 3)), np.zeros((0, 3)), "at least one center"),
        (np.full((4, 3), 1e30, dtype=np.float32), np.zeros((2, 3), dtype=np.float32), "overflow"),
    ],
)
def test_bad_input_refused_before_the_kernel(X, C, match):
    with pytest.raises(ValueError, match=match):
        pixelkm.assign_update(X, C, backend="cpu")


def test_auto_takes_cpu_on_the_cpu_and_torch_stays():
    X = torch.zeros(3, 2)
    assert select_backend("auto", X, X).name == "cpu"
    assert select_backend("torch", X, X).name == "torch"
    names = pixelkm.available_backends()
    assert names.index("cpu") < names.index("torch")
    assert CPU.not_supported_reasons(X.to(torch.int32), X) != []


def test_batched_equals_loop():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(3, 333, 5, generator=g)
    C = torch.randn(3, 6, 5, generator=g)
    w = torch.rand(3, 333, generator=g)
    res = pixelkm.assign_update(X, C, w, backend="cpu")
    for b in range(3):
        one = pixelkm.assign_update(X[b], C[b], w[b], backend="cpu")
        assert torch.equal(one.labels, res.labels[b]) and torch.equal(one.sums, res.sums[b])


def _full_iterates(X, C, w, iters):
    """The reference iterates: full passes (float64 accumulators), centers = sums / counts in the compute dtype."""
    out = []
    for _ in range(iters):
        r = cpu_pass(X, C, w, compute_second=True)
        C = _next_centers(r.sums[0], r.counts[0], C)
        out.append((r.labels[0].clone(), C))
    return out


def _next_centers(sums, counts, C):
    new = (sums / counts.clamp(min=1e-300).unsqueeze(1)).to(C.dtype)
    return torch.where((counts > 0).unsqueeze(1), new, C)  # an empty cluster keeps its center (both drivers)


@st.composite
def bounds_cases(draw):
    d = draw(st.sampled_from([1, 3, 5]))  # (each feature count is a compiled variant of the kernels)
    k = draw(st.integers(1, 12))
    n = draw(st.integers(k, 400))
    dtype = draw(st.sampled_from([torch.uint8, torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["normal", "duplicates", "grid"]))
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) * 20
    if kind == "duplicates":
        a = a[rng.integers(0, max(1, n // 5), size=n)]
    elif kind == "grid":
        a = np.round(a / 10) * 10  # many exact ties between centers
    if dtype == torch.uint8:
        a = np.clip(a + 128, 0, 255)
    X = torch.from_numpy(a).to(dtype)
    w = torch.from_numpy(rng.uniform(0, 2, size=n)) if draw(st.booleans()) else None
    return X, k, w, seed


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bounds_cases())
def test_bounds_give_the_iterates_of_full_passes(case):
    X, k, w, seed = case
    cdt = torch.float64 if X.dtype == torch.float64 else torch.float32
    w = None if w is None else w.to(cdt)
    g = torch.Generator().manual_seed(seed % 1000)
    C0 = X[torch.randperm(X.shape[0], generator=g)[:k]].to(cdt)
    ref = _full_iterates(X, C0, w, 8)
    state = CPU.bounds(X, w, k)
    C = C0
    prev = None
    for it, (lab_ref, C_ref) in enumerate(ref):
        labels, sums, counts, changed = state.step(C)
        assert torch.equal(labels, lab_ref), f"labels differ at step {it}"
        assert changed == (X.shape[0] if prev is None else int((labels != prev).sum()))
        prev = labels.clone()
        C = _next_centers(sums, counts, C)
        assert torch.equal(C, C_ref), f"centers differ at step {it}"


def test_bounds_invalidate_and_large_d():
    X, C = random_data(torch.float32, 3000, 3, 5, seed=1)
    state = CPU.bounds(X, None, 5)
    state.step(C)
    state.invalidate()
    labels, sums, counts, _ = state.step(C + 0.5)
    ref = cpu_pass(X, C + 0.5, compute_second=True)
    assert torch.equal(labels, ref.labels[0]) and torch.equal(sums, ref.sums[0])
    assert CPU.bounds(torch.zeros(10, 40), None, 3) is None  # no bounded pass beyond the small-d kernel


@pytest.mark.slow
def test_read_only_cache_dir_still_works(tmp_path):
    """A read-only numba cache (e.g. a system-wide install): the kernels compile in memory, no error reaches
    the user, the result is right."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    code = (
        "import warnings, torch, pixelkm\n"
        "warnings.simplefilter('error')\n"
        "X = torch.arange(60.).reshape(20, 3); C = X[:2].clone()\n"
        "r = pixelkm.assign_update(X, C, backend='cpu')\n"
        "assert r.labels.tolist() == [0] + [1] * 19, r.labels\n"
        "print('ok')\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(ro))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    ro.chmod(0o755)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("d", [3, 20])
def test_changed_labels_counted_in_the_kernel(dtype, d):
    """``PassExtras.previous_labels``: the count of changed labels equals the comparison, labels written into
    ``labels_out`` are the pass's own, and sums and counts are those of a plain pass (bit for bit); the small-d and
    the large-d pass."""
    g = torch.Generator().manual_seed(3)
    X = (torch.rand(1, 3 * 4096 + 77, d, generator=g) * 10).to(dtype)
    C = torch.rand(1, 9, d, generator=g, dtype=torch.float32) * 10
    be = get_backend("cpu")
    plain = be.assign_update(X, C, None)
    prev = torch.randint(0, 9, plain.labels.shape, generator=g)
    out = torch.full_like(prev, -5)
    ex = PassExtras(previous_labels=prev, labels_out=out)
    res = be.assign_update(X, C, None, extras=ex)
    assert res.labels.data_ptr() == out.data_ptr()
    assert torch.equal(res.labels, plain.labels)
    assert ex.n_changed.tolist() == [int((plain.labels != prev).sum())]
    assert torch.equal(res.sums, plain.sums) and torch.equal(res.counts, plain.counts)


@pytest.mark.parametrize("cdtype", [np.float32, np.float64])
def test_register_scan_by_hand(cdtype):
    """The register-held scan (explicit vector IR) against a hand oracle on small integers, where every squared
    distance is exact: nearest and second-nearest distances bit for bit, the lowest index on ties (duplicate
    centers, points halfway), partial tiles and groups, several blocks."""
    from pixelkm.backends.cpu import kernels as K

    rng = np.random.default_rng(5)
    n, d, k = K.BLOCK + 301, 3, 37
    X = rng.integers(0, 8, size=(n, d)).astype(np.uint8)
    C = rng.integers(0, 8, size=(k, d)).astype(cdtype)
    C[20] = C[3]  # a duplicate center: never nearest, and the second-nearest at the same distance
    d2 = ((X[:, None, :].astype(np.float64) - C[None].astype(np.float64)) ** 2).sum(-1)
    order = np.sort(d2, axis=1)
    nb = (n + K.BLOCK - 1) // K.BLOCK
    lab, mind, sec = np.empty(n, np.int64), np.empty(n, cdtype), np.empty(n, cdtype)
    sums, counts = np.zeros((k, d)), np.zeros(k)
    none = np.empty(0, np.int64)
    K.small_pass(
        X,
        C,
        np.empty(0),
        lab,
        none,
        none,
        mind,
        sec,
        *K.block_partials(nb, k, d),
        sums,
        counts,
        (0,) * d,
        1,
        False,
        2,
    )
    assert np.array_equal(lab, d2.argmin(1))  # argmin: the first of equal minima
    assert np.array_equal(mind, order[:, 0]) and np.array_equal(sec, order[:, 1])
    assert not np.any(lab == 20)
    assert np.array_equal(counts, np.bincount(lab, minlength=k))
    assert np.array_equal(sums, np.stack([np.bincount(lab, X[:, f], minlength=k) for f in range(d)], 1))


@pytest.mark.parametrize("cdtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 7, 16, 37, 70])
def test_expansion_tile_by_hand(cdtype, k):
    """The register-blocked expansion (explicit vector IR) against a hand oracle on small integers, where every
    dot product is exact: ``G`` = |c|^2 - 2 x.c bit for bit (the padding +inf), and the lanes give each row's
    smallest value, its center (the lowest index on ties: a duplicate center) and the second smallest (the tie
    included); k not a multiple of the panel, a partial group of rows; panels of one vector (k up to the lanes) and
    of two."""
    from numba import njit

    from pixelkm.backends.cpu import simd
    from pixelkm.backends.cpu.backend import center_panels

    rng = np.random.default_rng(k)
    R, d = simd.PANEL_ROWS, 21
    X = rng.integers(-4, 5, size=(R - 1, d)).astype(cdtype)
    C = rng.integers(-4, 5, size=(k, d)).astype(cdtype)
    if k > 30:
        C[30] = C[2]  # never the nearest, and the second smallest equal to the smallest where 2 is nearest
        X[0] = C[2]
    CP, csq, chunks = center_panels(C)
    W = simd.group_lanes(np.dtype(cdtype).itemsize)
    assert len(chunks) == (1 if k <= W else simd.PANEL_CHUNKS)
    assert CP.shape[2] == len(chunks) * W and csq.shape[0] % CP.shape[2] == 0

    @njit
    def run(X, CP, csq, chunks):
        G = np.empty((R, csq.shape[0]), X.dtype)
        m1, m2, i1 = np.empty(R * W, X.dtype), np.empty(R * W, X.dtype), np.empty(R * W, np.int32)
        simd.expansion_tile(X, 0, CP, csq, G, m1, i1, m2, chunks)
        out = np.empty((X.shape[0], 3))
        for p in range(X.shape[0]):
            b1, j1, b2 = simd.lanes_nearest_two(m1, i1, m2, p)
            out[p, 0] = b1
            out[p, 1] = j1
            out[p, 2] = b2
        return G, out

    G, out = run(X, CP, csq, chunks)
    v = (C.astype(np.float64) ** 2).sum(1)[None] - 2 * X.astype(np.float64) @ C.astype(np.float64).T
    assert np.array_equal(G[: R - 1, :k], v) and np.all(np.isinf(G[: R - 1, k:]))
    order = np.sort(v, axis=1)
    assert np.array_equal(out[:, 1], v.argmin(1)) and np.array_equal(out[:, 0], order[:, 0])
    assert np.array_equal(out[:, 2], order[:, 1] if k > 1 else np.full(R - 1, np.inf))
    if k > 30:
        assert out[0, 1] == 2 and out[0, 2] == out[0, 0]


@pytest.mark.parametrize("cdtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 7, 8, 16, 17, 40, 100])
def test_rows_sq_norms_by_hand(cdtype, d):
    """|x|^2 of a range of rows (explicit vector IR: the features a vector at a time, then the tail one by one)
    against a hand oracle on small integers, where every sum is exact; rows outside the range are not written."""
    from numba import njit

    from pixelkm.backends.cpu import simd

    rng = np.random.default_rng(d)
    X = rng.integers(-9, 10, size=(20, d)).astype(cdtype)

    @njit
    def run(X, t0, t1, out):
        simd.rows_sq_norms(X, t0, t1, out)

    out = np.full(20, -1.0)
    run(X, 3, 17, out)
    want = (X.astype(np.float64) ** 2).sum(1)
    assert np.array_equal(out[:14], want[3:17]) and np.all(out[14:] == -1.0)


@pytest.mark.parametrize("cdtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [9, 45])
def test_gemm_pass_by_hand(cdtype, k):
    """The large-d pass on small integers (exact expansions: every tie is a close call, rechecked by direct
    differences): labels (lowest index on ties, never a duplicate center), distances, Hamerly's second bound (at
    most the true second distance) and the sums, over several blocks and a partial group, 1 and 2 threads."""
    from pixelkm.backends.cpu import kernels as K
    from pixelkm.backends.cpu.backend import center_panels, rounding_slack

    rng = np.random.default_rng(8)
    n, d = K.BLOCK + 301, 24
    X = rng.integers(0, 3, size=(n, d)).astype(cdtype)
    C = rng.integers(0, 3, size=(k, d)).astype(cdtype)
    dup = k - 1 if k < 40 else 40
    C[dup] = C[5]
    d2 = ((X[:, None, :].astype(np.float64) - C[None].astype(np.float64)) ** 2).sum(-1)
    order = np.sort(d2, axis=1)
    CP, csq, chunks = center_panels(C)
    nb = (n + K.BLOCK - 1) // K.BLOCK
    for threads in (1, 2):
        lab, mind, sec = np.empty(n, np.int64), np.empty(n, cdtype), np.empty(n, cdtype)
        sums, counts = np.zeros((k, d)), np.zeros(k)
        part = K.block_partials(nb, k, d)
        slack = rounding_slack(np.dtype(cdtype), d)
        none = np.empty(0, np.int64)
        args = (slack, np.empty(0), lab, none, none, mind, sec, *part, sums, counts, 1, threads)
        K.gemm_pass(X, C, CP, csq, chunks, *args)
        assert np.array_equal(lab, d2.argmin(1)) and not np.any(lab == dup)
        assert np.array_equal(mind, order[:, 0])
        assert np.all(sec <= order[:, 1]) and np.all(sec >= 0.0)
        assert np.array_equal(counts, np.bincount(lab, minlength=k))
        assert np.array_equal(sums, np.stack([np.bincount(lab, X[:, f], minlength=k) for f in range(d)], 1))


def test_fma_rounds_once_on_an_fma_host():
    """``simd.fma``: (1 + 2^-12)^2 - 1 = 2^-11 + 2^-24 exactly in float32 when fused; rounding the product first
    loses the 2^-24 (a tie, to even)."""
    from numba import njit

    from pixelkm.backends.cpu import simd

    f = njit(lambda a, b, c: simd.fma(a, b, c))
    a = np.float32(1 + 2.0**-12)
    got = f(a, a, np.float32(-1.0))
    assert got == (np.float32(2.0**-11 + 2.0**-24) if simd.HAS_FMA else np.float32(2.0**-11))
    assert f(2.0, 3.0, 1.0) == 7.0


def _small_pass(X, C, prune, nthreads=2, w=None):
    """The small-d kernel on numpy arrays: (labels, distances, sums, counts)."""
    from pixelkm.backends.cpu import kernels as K

    n, d = X.shape
    k = C.shape[0]
    nb = (n + K.BLOCK - 1) // K.BLOCK
    lab, mind = np.empty(n, np.int64), np.empty(n, C.dtype)
    sums, counts = np.zeros((k, d)), np.zeros(k)
    none = np.empty(0, np.int64)
    wn = np.empty(0) if w is None else w
    part = K.block_partials(nb, k, d)
    K.small_pass(X, C, wn, lab, none, none, mind, mind[:0], *part, sums, counts, (0,) * d, 0, prune, nthreads)
    return lab, mind, sums, counts


@pytest.mark.parametrize("d", [1, 3, 5, 8, 9])
@pytest.mark.parametrize("weighted", [True, False])
def test_run_sums_equal_per_point_sums(d, weighted):
    """The small-d pass keeps a run of points with one label summed in registers (up to RUN_D features) and adds
    points one by one where labels change often: its float64 sums and counts must be those of the per-point adds in
    the same blocks and order (``sums_by_label``, the sums the bounded passes use) bit for bit, with non-integer
    data and weights (where the order of the additions shows), in blocks that mix long runs, alternating labels and
    runs across tile and block boundaries, for 1 and 2 threads."""
    from pixelkm.backends.cpu import kernels as K

    rng = np.random.default_rng(3)
    k = 4
    C = (np.arange(k, dtype=np.float32)[:, None] * 10.0 + np.zeros((1, d), np.float32)).astype(np.float32)
    pieces = []
    for run in (700, 3, 1, 1, 2, 5000, 1, 1, 1, 1, 300, 4096, 2, 1000):  # lengths of the label runs, in order
        j = int(rng.integers(0, k))
        pieces.append(C[j] + rng.uniform(-0.3, 0.3, size=(run, d)).astype(np.float32))
    X = np.ascontiguousarray(np.concatenate(pieces))
    alternating = C[np.arange(2000) % 2] + rng.uniform(-0.3, 0.3, (2000, d)).astype(np.float32)
    X = np.ascontiguousarray(np.concatenate([X[:9000], alternating, X[9000:]]))  # a tile of changes inside a block
    n = X.shape[0]
    w = rng.uniform(0.1, 3.0, size=n) if weighted else None
    lab0, _, _, _ = _small_pass(X, C, False, 1, w)
    assert (np.diff(lab0) != 0).sum() > 2000  # the alternating part is there
    nb = (n + K.BLOCK - 1) // K.BLOCK
    ref_s, ref_c = np.zeros((k, d)), np.zeros(k)
    part = K.block_partials(nb, k, d)
    K.sums_by_label(X, np.empty(0) if w is None else w, lab0, *part, ref_s, ref_c, 2)
    for threads in (1, 2):
        lab, _, sums, counts = _small_pass(X, C, False, threads, w)
        assert np.array_equal(lab, lab0)
        assert np.array_equal(sums, ref_s) and np.array_equal(counts, ref_c)
    exact = np.zeros((k, d))
    np.add.at(exact, lab0, X.astype(np.float64) * (1.0 if w is None else w[:, None]))
    np.testing.assert_allclose(ref_s, exact, rtol=1e-12)  # and they are the sums


def _runs(rng, n, d, scale, dtype):
    """Points in runs of similar values (a photo's rows, sorted colors): a random walk, as the pruning expects."""
    return (np.cumsum(rng.normal(0, 1, size=(n, d)), axis=0) * scale).astype(dtype)


@pytest.mark.parametrize(
    "case",
    ["walk-f32-d3", "walk-u8-d3", "walk-f64-d2", "walk-f32-d5", "ints-f32-d3", "shuffled-f32-d3", "far-f32-d3"],
)
def test_pruned_scan_equals_full_scan(case):
    """The small-d pass with the per-group pruning of centers (simd.scan_pruned) gives the labels, distances, sums
    and counts of the full scan bit for bit: coherent runs (pruning skips most centers), integer data with exact
    ties and duplicate centers (lowest index), shuffled points (the worker falls back to full scans), data far from
    the origin with a tiny spread; k not a multiple of the vector width; against the float64 argmin too."""
    rng = np.random.default_rng(11)
    kind, dt, dd = case.split("-")
    d = int(dd[1:])
    n, k = 3 * 4096 + 77, 101
    dtype = {"f32": np.float32, "f64": np.float64, "u8": np.uint8}[dt]
    cdt = np.float64 if dtype == np.float64 else np.float32
    if kind == "ints":
        X = rng.integers(0, 6, size=(n, d)).astype(np.float32)
        X = X[np.lexsort(X.T[::-1])]  # sorted: runs of equal points, where pruning keeps few centers
        C = rng.integers(0, 6, size=(k, d)).astype(cdt)
        C[50] = C[7]  # a duplicate: never nearest
    elif kind == "far":
        X = (1e4 + _runs(rng, n, d, 1e-3, np.float64)).astype(dtype)
        C = X[rng.choice(n, k, replace=False)].astype(cdt) + rng.normal(0, 1e-3, (k, d)).astype(cdt)
    else:
        X = _runs(rng, n, d, 2.0, np.float64)
        if dt == "u8":
            X = np.clip(X - X.min(0) + 3, 0, 255)
        X = X.astype(dtype)
        if kind == "shuffled":
            X = X[rng.permutation(n)]
        C = X[rng.choice(n, k, replace=False)].astype(cdt) + rng.normal(0, 0.5, (k, d)).astype(cdt)
    full = _small_pass(X, C, False)
    for threads in (1, 2):
        got = _small_pass(X, C, True, threads)
        for a, b in zip(full, got):
            assert np.array_equal(a, b)
    d2 = ((X[:, None, :].astype(np.float64) - C[None].astype(np.float64)) ** 2).sum(-1)
    if kind == "ints":  # exact distances: the oracle bit for bit, ties to the lowest index
        assert np.array_equal(full[0], d2.argmin(1)) and np.array_equal(full[1], d2.min(1))
        assert not np.any(full[0] == 50)
    else:
        ref = d2.argmin(1)
        check_labels(torch.from_numpy(full[0]), torch.from_numpy(ref), torch.from_numpy(d2), 1e-5)
    kept = _kept_per_group(X, C)
    if kind == "shuffled":
        assert kept > k / 2  # nothing to prune: the backoff case
    elif kind != "far":
        assert kept < k / 4  # the bounds did skip most centers (the equalities above tested that path)


def _kept_per_group(X, C):
    """The mean number of centers simd.scan_pruned keeps per group of points of X (in the kernel's dtype)."""
    from numba import njit

    from pixelkm.backends.cpu import simd

    W = simd.group_lanes(C.itemsize)
    d = C.shape[1]
    n = X.shape[0] // W * W
    XT = np.ascontiguousarray(X[:n].T.astype(C.dtype))
    kp = -(-C.shape[0] // W) * W
    CT = np.full((d, kp), np.inf, C.dtype)
    CT[:, : C.shape[0]] = C.T

    @njit
    def run(XT, CT, C, dims):
        cand, scratch = np.empty(CT.shape[1], np.int32), np.empty(CT.shape[1], C.dtype)
        best, bidx = np.empty(XT.shape[1], C.dtype), np.empty(XT.shape[1], np.int32)
        total = 0
        for g in range(0, XT.shape[1], W):
            total += simd.scan_pruned(XT, g, CT, C, cand, scratch, best, bidx, dims)
        return total

    return run(XT, CT, C, (0,) * d) / (n // W)


def test_kernels_record_the_simd_source():
    """numba's disk cache of the kernels keys on kernels.py's text: it must change with simd.py (see SIMD_SHA256)."""
    import hashlib

    from pixelkm.backends.cpu import kernels, simd

    with open(simd.__file__, "rb") as f:
        assert kernels.SIMD_SHA256 == hashlib.sha256(f.read()).hexdigest(), "update kernels.SIMD_SHA256"
