"""The Triton backend against the torch reference and a float64 oracle.

Without a GPU these run on the CPU under TRITON_INTERPRET=1 (set by conftest.py before triton is imported),
with small inputs because the interpreter is slow; with a GPU the same tests run the compiled kernels on
CUDA, and the tests marked ``gpu`` add larger sizes, repeatability and speed-independent checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pixelkm
from pixelkm.backends import get_backend, select_backend

triton_backend = pytest.importorskip("pixelkm.backends.triton_backend")
if not triton_backend.TRITON_AVAILABLE:
    pytest.skip(f"triton is not importable: {triton_backend.IMPORT_ERROR}", allow_module_level=True)

from pixelkm._kernels import assign_update as au_kernel
from pixelkm._kernels import cluster_sums as cs_kernel
from pixelkm._kernels.small_d import D_MAX as SMALL_D_MAX

CUDA = torch.cuda.is_available()
DEV = torch.device("cuda" if CUDA else "cpu")
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (compiled Triton kernels)")

DTYPES = [torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64]
DS = [1, 3, 5, 16, 128, 130]
KS = [1, 7, 64, 256, 300]


def make_inputs(dtype, b, n, d, k, seed, weighted):
    """Fresh random X (b, n, d), centers (b, k, d) and weights, with no exact ties by construction."""
    g = torch.Generator().manual_seed(seed)
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    if dtype == torch.uint8:
        X = torch.randint(0, 256, (b, n, d), generator=g, dtype=torch.uint8)
        C = torch.randint(0, 256, (b, k, d), generator=g).to(cdt) + torch.rand(b, k, d, generator=g, dtype=cdt)
    else:
        X = (torch.randn(b, n, d, generator=g) * 3 + 1).to(dtype)
        C = torch.randn(b, k, d, generator=g, dtype=cdt) * 3 + 1
    w = torch.rand(b, n, generator=g, dtype=cdt) * 2 if weighted else None
    return X.to(DEV), C.to(DEV), None if w is None else w.to(DEV)


def oracle_distances(X, C):
    """Exact (float64) squared distances (b, n, k)."""
    x, c = X.double(), C.double()
    return (x.square().sum(-1, keepdim=True) - 2 * x @ c.transpose(1, 2) + c.square().sum(-1).unsqueeze(1)).clamp_min(0)


def dist_tolerance(X, C):
    """Absolute rounding bound (b, n, 1) of a float32 distance: a few ulps of ||x||^2 + max ||c||^2."""
    if C.dtype == torch.float64:
        eps = 1e-12
    else:
        eps = 1e-5
    return eps * (X.double().square().sum(-1, keepdim=True) + C.double().square().sum(-1).amax(-1).view(-1, 1, 1))


def ranking_precision(X, C, precision=None):
    """The precision of the product that ranks the centers: the large-d path's default is one TF32 pass on CUDA
    (the interpreter computes every ``tl.dot`` in IEEE float32); the small-d path uses direct differences."""
    if X.shape[-1] <= SMALL_D_MAX or C.dtype == torch.float64 or DEV.type != "cuda":
        return "ieee"
    return precision or "tf32"


def label_tolerance(X, C, precision):
    """Absolute bound (b, n, 1) on how much farther than the nearest center a chosen center can be: the float32
    rounding of ``dist_tolerance``, and for one TF32 pass its operands' rounding: (x - s) and (c - s) kept to 11
    significant bits (relative error u <= 2^-10 even if truncated) move -2 (x - s).(c - s) by at most
    2 (2u + u^2) ||x - s|| ||c - s||, for the chosen center and for the nearest one."""
    tol = dist_tolerance(X, C)
    if precision != "tf32":
        return tol
    s = C.double().mean(1, keepdim=True)  # the kernel's shift: the mean of the centers
    xn = (X.double() - s).norm(dim=-1, keepdim=True)
    cn = (C.double() - s).norm(dim=-1).amax(-1).view(-1, 1, 1)
    u = 2.0**-10
    return tol + 2 * 2 * (2 * u + u * u) * xn * cn


def check_against_oracle(X, C, w, labels, min_sq, sums, counts, ref, precision=None):
    """Labels are nearest within the rounding of the ranking product, differ from the reference only at
    near-ties (at most 1% of points; for one TF32 pass, the inertia of the labels within 1e-4 of the nearest
    centers'), distances match float32 rounding (they are recomputed exactly for the chosen center), and
    sums/counts equal a float64 one-hot reduction of the kernel's own labels."""
    b, n, d = X.shape
    k = C.shape[1]
    assert labels.dtype == torch.int64 and labels.shape == (b, n)
    assert bool(((labels >= 0) & (labels < k)).all()), "a label is out of range (not written?)"
    d2 = oracle_distances(X, C)
    tol = dist_tolerance(X, C)
    prec = ranking_precision(X, C, precision)
    ltol = label_tolerance(X, C, prec)
    mine = d2.gather(2, labels.unsqueeze(-1))
    best = d2.amin(-1, keepdim=True)
    assert bool((mine <= best + ltol).all()), f"a label is not the nearest center, even within {prec} rounding"
    diff = labels != ref.labels
    if bool(diff.any()):
        theirs = d2.gather(2, ref.labels.unsqueeze(-1))
        assert bool(((mine - theirs).abs()[diff.unsqueeze(-1)] <= 2 * ltol[diff.unsqueeze(-1)]).all())
        if prec == "tf32":
            ww = torch.ones(b, n, dtype=torch.float64, device=X.device) if w is None else w.double()
            got, want = (ww * mine[..., 0]).sum(1), (ww * best[..., 0]).sum(1)
            assert bool(((got - want) <= 1e-4 * want).all()), f"inertia of the labels {got} against {want}"
        else:
            assert int(diff.sum()) <= max(2, b * n // 100), f"{int(diff.sum())} labels differ from the reference"
    assert min_sq.dtype == C.dtype and bool(torch.isfinite(min_sq).all())
    torch.testing.assert_close(min_sq.double().unsqueeze(-1), mine, rtol=1e-5, atol=float(tol.max()))
    ww = torch.ones(b, n, dtype=torch.float64, device=X.device) if w is None else w.double()
    onehot = torch.nn.functional.one_hot(labels, k).double() * ww.unsqueeze(-1)  # (b, n, k)
    want_sums = onehot.transpose(1, 2) @ X.double()
    want_counts = onehot.sum(1)
    assert sums.dtype == C.dtype and counts.dtype == C.dtype
    assert sums.shape == (b, k, d) and counts.shape == (b, k)
    scale = float((X.double().abs() * ww.unsqueeze(-1)).sum(1).max()) + 1.0
    rtol = 1e-12 if C.dtype == torch.float64 else 1e-6
    torch.testing.assert_close(sums.double(), want_sums, rtol=rtol, atol=rtol * scale)
    torch.testing.assert_close(counts.double(), want_counts, rtol=rtol, atol=rtol * n)


def batched(res):
    """The four outputs of a 2-D call with the leading batch dimension put back."""
    return res.labels[None], res.min_sq_dist[None], res.sums[None], res.counts[None]


@pytest.fixture
def poisoned(monkeypatch):
    """Every output the kernels must fully overwrite starts as NaN (floats) or -1 (ints)."""

    def empty_output(shape, dtype, device):
        fill = float("nan") if dtype.is_floating_point else -1
        return torch.full(shape, fill, dtype=dtype, device=device)

    monkeypatch.setattr(au_kernel, "empty_output", empty_output)
    monkeypatch.setattr(cs_kernel, "empty_output", empty_output)


CASES = [
    pytest.param(
        dtype, d, KS[(i + j) % len(KS)], (i + j) % 2 == 0, id=f"{str(dtype)[6:]}-d{d}-k{KS[(i + j) % len(KS)]}"
    )
    for i, dtype in enumerate(DTYPES)
    for j, d in enumerate(DS)
]


@pytest.mark.parametrize("dtype, d, k, weighted", CASES)
def test_matches_reference(dtype, d, k, weighted, poisoned):
    """Every dtype x every d, each k with every dtype and every d; batched (but for large d with k > 64), n not
    a multiple of the block, several blocks per program, both reduction modes, poisoned outputs."""
    n, bn = (203, 64) if k <= 64 else (45, 64)  # the interpreter's time grows with k x blocks
    b = 1 if k > 64 and d > SMALL_D_MAX else 2  # (and with cluster tiles x feature tiles for large d)
    X, C, w = make_inputs(dtype, b, n, d, k, seed=1000 * d + k, weighted=weighted)
    ref = get_backend("torch").assign_update(X, C, w)
    results = {}
    for det in (False, True):
        out = au_kernel.assign_update(X, C, w, deterministic=det, block_n=bn, max_programs=2)
        check_against_oracle(X, C, w, *out, ref)
        results[det] = out
    assert torch.equal(results[False][0], results[True][0]), "the two modes disagree on labels"
    if d <= SMALL_D_MAX and (k <= 16 or (w is None and dtype == torch.uint8)):  # slots in both modes
        for a, b in zip(results[False], results[True]):
            assert torch.equal(a, b), "the small-d path gives different bits in the two modes"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t)[6:])
def test_public_api(dtype):
    """pixelkm.assign_update(..., backend="triton") on 2-D input, weighted, with default launch sizes."""
    X, C, w = make_inputs(dtype, 1, 300, 3, 5, seed=7, weighted=True)
    res = pixelkm.assign_update(X[0], C[0], w[0], backend="triton")
    ref = pixelkm.assign_update(X[0], C[0], w[0], backend="torch")
    assert res.labels.shape == (300,) and res.sums.shape == (5, 3)
    check_against_oracle(X, C, w, *batched(res), pixelkm.AssignUpdateResult(*batched(ref)))


def test_no_labels_gives_same_sums():
    X, C, w = make_inputs(torch.float32, 2, 150, 16, 9, seed=3, weighted=True)
    full = get_backend("triton").assign_update(X, C, w)
    for det in (False, True):
        part = get_backend("triton").assign_update(X, C, w, compute_labels=False, deterministic=det)
        assert part.labels is None and part.min_sq_dist is None
        torch.testing.assert_close(part.sums, full.sums)
        torch.testing.assert_close(part.counts, full.counts)


@pytest.mark.parametrize("d", [3, 20])
def test_strided_input(d):
    """X that is a non-contiguous view (features not adjacent) is read through its strides, not copied."""
    g = torch.Generator().manual_seed(d)
    base = torch.randn(2, d, 401, generator=g).to(DEV)
    X = base.transpose(1, 2)[:, ::2]  # (2, 201, d), stride_xd = 401, stride_xn = 2
    C = torch.randn(2, 6, d, generator=g).to(DEV)
    res = get_backend("triton").assign_update(X, C, None)
    ref = get_backend("torch").assign_update(X, C, None)
    check_against_oracle(X, C, None, res.labels, res.min_sq_dist, res.sums, res.counts, ref)


@pytest.mark.parametrize("d", [1, 16], ids=["direct", "dot"])
def test_ties_go_to_lowest_index(d):
    X = torch.tensor([[0.0], [1.0], [2.0]]).repeat(1, d).to(DEV)
    C = torch.tensor([[1.0], [-1.0], [1.0], [3.0]]).repeat(1, d).to(DEV)  # x=0 ties 0/1, x=2 ties 0/2/3
    assert pixelkm.assign_update(X, C, backend="triton").labels.tolist() == [0, 0, 0]
    # duplicated centers: every point must take the first copy, whichever tile the copy is in
    g = torch.Generator().manual_seed(0)
    C0 = torch.randn(40, d, generator=g)
    Xr = torch.randn(300, d, generator=g).to(DEV)
    res = au_kernel.assign_update(Xr[None], torch.cat([C0, C0])[None].to(DEV), block_k=16)
    assert int(res[0].max()) < 40


@pytest.mark.parametrize("d", [2, 16], ids=["direct", "dot"])
def test_far_from_origin_keeps_precision(d):
    """Data at 1e6 with unit spread: neither path may lose the spread to cancellation."""
    g = torch.Generator().manual_seed(0)
    X = (1e6 + torch.randn(1, 500, d, generator=g)).to(DEV)
    C = (1e6 + torch.randn(1, 4, d, generator=g)).to(DEV)
    labels, min_sq, _, _ = au_kernel.assign_update(X, C)
    d2 = ((X.double()[:, :, None] - C.double()[:, None]) ** 2).sum(-1)
    assert (labels == d2.argmin(-1)).float().mean() > 0.99
    torch.testing.assert_close(min_sq.double(), d2.amin(-1), rtol=1e-2, atol=0.5)


@pytest.mark.gpu
@requires_cuda
def test_contention_precision_k2():
    """k = 2 and 2^20 uint8 points, 128 blocks per program: the sums are integers and must come out exactly
    (float32 block sums, float64 slots); a float32 running sum of 10^8 would have lost its last digits."""
    n = (1 << 20) + 3
    g = torch.Generator().manual_seed(1)
    X = torch.randint(0, 256, (1, n, 1), generator=g, dtype=torch.uint8).to(DEV)
    C = torch.tensor([[[64.25], [191.25]]]).to(DEV)
    lab = (X[0, :, 0] >= 128).long()
    want = torch.stack([X[0, lab == i, 0].double().sum() for i in (0, 1)])
    for det in (False, True):
        labels, _, sums, counts = au_kernel.assign_update(X, C, deterministic=det, max_programs=8)
        assert torch.equal(labels[0], lab)
        assert torch.equal(sums[0, :, 0].double(), want.float().double())
        assert torch.equal(counts[0].double(), torch.bincount(lab, minlength=2).double())


def test_deterministic_mode_is_repeatable():
    """The deterministic mode gives the same bits on every run (on a GPU, atomics would not)."""
    # register sums, atomic slots (float data: cluster_sums), atomic slots (integer sums), large d: cluster_sums
    for d, k, dtype, weighted in [
        (3, 9, torch.float32, True),
        (2, 40, torch.float32, True),
        (2, 40, torch.uint8, False),
        (40, 20, torch.float32, True),
    ]:
        X, C, w = make_inputs(dtype, 2, 150, d, k, seed=d + k, weighted=weighted)
        runs = [au_kernel.assign_update(X, C, w, deterministic=True, block_n=64) for _ in range(2)]
        for other in runs[1:]:
            for a, b in zip(runs[0], other):
                assert torch.equal(a, b)


@pytest.mark.parametrize("precision", ["ieee", "tf32x3", "tf32", "fp16"])
def test_dot_precisions(precision):
    """Every precision of the large-d product runs; the fast ones may move near-ties only (bounded)."""
    X, C, w = make_inputs(torch.float32, 1, 300, 40, 20, seed=9, weighted=True)
    labels, _, sums, counts = au_kernel.assign_update(X, C, w, precision=precision)
    d2 = oracle_distances(X, C)
    rel = (d2.gather(2, labels.unsqueeze(-1)) - d2.amin(-1, keepdim=True)) / d2.amin(-1, keepdim=True)
    assert float(rel.max()) < (1e-5 if precision in ("ieee", "tf32x3") else 2e-2)
    onehot = torch.nn.functional.one_hot(labels, 20).double() * w.double().unsqueeze(-1)
    torch.testing.assert_close(sums.double(), onehot.transpose(1, 2) @ X.double(), rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(counts.double(), onehot.sum(1), rtol=1e-6, atol=1e-4)


def test_bad_launch_arguments():
    X, C, _ = make_inputs(torch.float64, 1, 10, 12, 3, seed=0, weighted=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        au_kernel.assign_update(X, C, precision="bf17")
    with pytest.raises(ValueError, match="float64 data needs precision='ieee'"):
        au_kernel.assign_update(X, C, precision="tf32")
    with pytest.raises(ValueError, match=r"centers must have shape \(1, k, 12\)"):
        au_kernel.assign_update(X, C[:, :, :5])
    with pytest.raises(TypeError, match="centers must be float32 or float64"):
        au_kernel.assign_update(X, C.half())


def test_batched_equals_loop():
    X, C, w = make_inputs(torch.bfloat16, 3, 257, 5, 11, seed=5, weighted=True)
    res = pixelkm.assign_update(X, C, w, backend="triton")
    for i in range(3):
        one = pixelkm.assign_update(X[i], C[i], w[i], backend="triton")
        assert torch.equal(one.labels, res.labels[i])
        torch.testing.assert_close(one.sums, res.sums[i])
        torch.testing.assert_close(one.counts, res.counts[i])


def test_registry_and_reasons():
    from pixelkm.backends.cpu import CPU_AVAILABLE

    # triton first (auto's choice on CUDA), then the fused CPU backend where numba imports, then the reference
    assert pixelkm.available_backends() == ["triton", *(["cpu"] if CPU_AVAILABLE else []), "torch"]
    tb = get_backend("triton")
    X = torch.zeros(1, 3, 2, device=DEV)
    assert tb.not_supported_reasons(X, X) == []
    assert select_backend("triton", X, X) is tb
    reasons = tb.not_supported_reasons(X.to(torch.int32), X.half())
    assert any("dtype torch.int32" in r for r in reasons) and any("centers dtype torch.float16" in r for r in reasons)
    meta = torch.zeros(1, 3, 2, device="meta")
    assert any("device 'meta'" in r for r in tb.not_supported_reasons(meta, meta))
    with pytest.raises(ValueError, match="backend 'triton' cannot run these inputs: .*dtype torch.int32"):
        select_backend("triton", X.to(torch.int32), X)


def test_auto_never_picks_the_interpreter(monkeypatch):
    X = torch.zeros(1, 3, 2)
    assert select_backend("auto", X, X).name in ("cpu", "torch")  # the CPU backends, never the interpreter
    monkeypatch.setenv("PIXELKM_BACKEND", "triton")  # an explicit override may still choose it
    if au_kernel.is_interpreted():
        assert select_backend("auto", X, X).name == "triton"


def test_eager_call_launches_directly(monkeypatch):
    """An eager call on plain tensors does not go through the custom op (its wrapper imported torch._dynamo at
    the first call, 1.4 s, and cost ~0.25 ms a call on an H200), and gives what the op gives."""
    op = triton_backend.triton_assign_update
    calls = []
    monkeypatch.setattr(triton_backend, "triton_assign_update", lambda *a: calls.append(1) or op(*a))
    X, C, w = make_inputs(torch.float32, 1, 300, 3, 5, seed=3, weighted=True)
    got = get_backend("triton").assign_update(X, C, w)
    assert not calls
    want = op(X, C, w, True, True, False, "", torch.int64)
    for a, b in zip((got.labels, got.min_sq_dist, got.sums, got.counts), want):
        assert torch.equal(a, b)


def test_eager_call_imports_no_dynamo(tmp_path):
    """The first eager call in a fresh process leaves torch._dynamo (and sympy) unimported."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from pixelkm.backends import get_backend\n"
        f"dev = {DEV.type!r}\n"
        "X = torch.rand(1, 500, 3, device=dev); C = torch.rand(1, 4, 3, device=dev)\n"
        "get_backend('triton').assign_update(X, C, None)\n"
        "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))\n"
    )
    env = {**__import__("os").environ, "TRITON_INTERPRET": "1"} if not CUDA else None
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_custom_op_opcheck_and_compile():
    """The op has a correct fake implementation, and torch.compile captures it as one node (no graph break)."""
    op = triton_backend.triton_assign_update
    X, C, w = make_inputs(torch.uint8, 1, 70, 3, 4, seed=2, weighted=True)
    utils = ("test_schema", "test_faketensor")
    torch.library.opcheck(op, (X, C, w, True, True, False, "", torch.int64), test_utils=utils)
    torch.library.opcheck(op, (X, C, None, False, False, True, "", torch.int64), test_utils=utils)
    torch.library.opcheck(op, (X, C, w, True, False, False, "", torch.uint8), test_utils=utils)

    def step(X, C, w):
        res = get_backend("triton").assign_update(X, C, w)
        return res.sums / res.counts.clamp_min(1).unsqueeze(-1), res.labels

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    got, want = compiled(X, C, w), step(X, C, w)
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(got[1], want[1])


def test_kmeans_photo_matches_torch(photo_pixels):
    """KMeans(backend="triton") on a subsampled photo: same labels and inertia as backend="torch"."""
    X = torch.from_numpy(photo_pixels("kodim23.png", step=16)).to(DEV)
    init = X[:: X.shape[0] // 6][:6].double().cpu().numpy() + np.linspace(0.1, 0.6, 6)[:, None]
    fits = {be: pixelkm.KMeans(6, init=init, max_iter=20, backend=be).fit(X) for be in ("torch", "triton")}
    a, b = fits["triton"], fits["torch"]
    assert (a.labels_ == b.labels_).float().mean() > 0.999
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-5)


def test_kmeans_blobs_matches_torch():
    from conftest import make_blobs

    X = torch.from_numpy(make_blobs(600, 12, 5, seed=4)).float().to(DEV)
    fits = [pixelkm.kmeans(X, 5, random_state=0, backend=be) for be in ("torch", "triton")]
    centers_t, labels_t = fits[0][0], fits[0][1]
    centers_x, labels_x = fits[1][0], fits[1][1]
    assert torch.equal(labels_t, labels_x)
    torch.testing.assert_close(centers_x, centers_t, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("d, k", [(3, 7), (3, 40), (16, 20)], ids=["small-reduce", "small-atomic", "large"])
def test_label_dtypes_and_no_distances(d, k):
    """Narrow labels equal the int64 ones; without distances nothing changes in the sums; errors name the problem."""
    X, C, w = make_inputs(torch.float32, 2, 150, d, k, seed=d + k, weighted=True)
    full = au_kernel.assign_update(X, C, w)
    for dt in (torch.uint8, torch.int16, torch.int32):
        labels, min_sq, sums, counts = au_kernel.assign_update(X, C, w, label_dtype=dt, compute_distances=False)
        assert labels.dtype == dt and min_sq is None
        assert torch.equal(labels.long(), full[0])
        torch.testing.assert_close(sums, full[2], rtol=1e-6, atol=1e-4)
        torch.testing.assert_close(counts, full[3], rtol=1e-6, atol=1e-5)
    res = get_backend("triton").assign_update(X, C, w, compute_distances=False, label_dtype=torch.int16)
    assert res.min_sq_dist is None and res.labels.dtype == torch.int16
    with pytest.raises(ValueError, match="cannot hold labels up to 299"):
        au_kernel.assign_update(X, torch.cat([C] * 43, 1)[:, :300], label_dtype=torch.uint8)
    with pytest.raises(ValueError, match="label_dtype must be"):
        au_kernel.assign_update(X, C, label_dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_outlier_keeps_labels_small_d(dtype):
    """Issue 16 item 1: one value of 1e5 among unit-scale float32 data. The expanded form ||x||^2 - 2 x.c + ||c||^2
    loses the other points' distances to cancellation; the small-d path's direct differences do not."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(1, 300, 3, generator=g, dtype=dtype)
    X[0, 17, 1] = 1e5
    C = torch.randn(1, 7, 3, generator=g, dtype=dtype)
    C[0, 6] = X[0, 17] + 1.0  # a center near the outlier, which pulls the mean of the centers far away
    labels, min_sq, _, _ = au_kernel.assign_update(X.to(DEV), C.to(DEV))
    d2 = ((X.double()[:, :, None] - C.double()[:, None]) ** 2).sum(-1)
    assert torch.equal(labels.cpu(), d2.argmin(-1))
    torch.testing.assert_close(min_sq.cpu().double(), d2.amin(-1), rtol=1e-5, atol=1e-5)


def test_small_d_walks_every_center_in_order():
    """k not a multiple of the unrolling (NaN padding never wins), every center the nearest for someone."""
    for k in (1, 2, 5, 17, 33):
        C = (torch.arange(k, dtype=torch.float32) * 10).view(1, k, 1).repeat(1, 1, 2)
        X = (C + 0.5).repeat(1, 3, 1)  # each point sits at its center + 0.5
        labels, min_sq, sums, counts = au_kernel.assign_update(X.to(DEV), C.to(DEV), block_n=32)
        assert labels[0].tolist() == list(range(k)) * 3
        assert torch.equal(counts[0].cpu(), torch.full((k,), 3.0))
        torch.testing.assert_close(sums[0].cpu(), 3 * (C[0] + 0.5))
        torch.testing.assert_close(min_sq.cpu(), torch.full((1, 3 * k), 0.5))


def test_tf32_inertia_within_1e4():
    """The default large-d precision, one TF32 pass, on a TF32 emulation (operands rounded to 11 significant bits,
    float32 accumulation): the inertia of its labels stays within 1e-4 relative of the float32 labels' inertia.
    (The interpreter computes tl.dot in float32 whatever the precision, so this checks the rounding itself.)"""
    assert au_kernel.default_precision(torch.float32) == "tf32"
    g = torch.Generator().manual_seed(5)
    n, d, k = 4000, 128, 256
    means = torch.randn(k, d, generator=g) * 2
    X = means[torch.randint(0, k, (n,), generator=g)] + torch.randn(n, d, generator=g)
    C = X[torch.randperm(n, generator=g)[:k]] + 0.01

    def tf32(v):
        bits = v.contiguous().view(torch.int32)
        return ((bits + 0x1000) & -0x2000).view(torch.float32)

    s = C.mean(0)
    xs, cs = X - s, C - s
    exact = (xs.double() ** 2).sum(1, keepdim=True) - 2 * xs.double() @ cs.double().T + (cs.double() ** 2).sum(1)
    emulated = (cs * cs).sum(1) - 2 * tf32(xs) @ tf32(cs).T  # float32 accumulation of rounded operands
    lab32 = (cs * cs).sum(1).sub(2 * xs @ cs.T).argmin(1)
    lab_tf32 = emulated.argmin(1)
    inertia32 = exact.gather(1, lab32[:, None]).sum()
    inertia_tf32 = exact.gather(1, lab_tf32[:, None]).sum()
    assert float((inertia_tf32 - inertia32).abs() / inertia32) < 1e-4
    assert float((lab_tf32 != lab32).float().mean()) < 0.01


# ---------------------------------------------------------------- GPU only: compiled kernels, larger sizes


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("precision", ["ieee", "tf32x3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda t: str(t)[6:])
def test_gpu_float32_precisions_give_float32_labels(dtype, precision):
    """The large-d products that keep float32 accuracy give labels nearest within float32 rounding (the strict
    oracle that one TF32 pass, the default, meets only within its own rounding)."""
    X, C, w = make_inputs(dtype, 2, 20_011, 128, 1024, seed=11, weighted=True)
    ref = get_backend("torch").assign_update(X, C, w)
    res = get_backend("triton").assign_update(X, C, w, precision=precision)
    check_against_oracle(X, C, w, res.labels, res.min_sq_dist, res.sums, res.counts, ref, precision=precision)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t)[6:])
@pytest.mark.parametrize("d, k", [(3, 8), (3, 256), (5, 64), (3, 1000), (128, 1024), (130, 7), (1024, 33)])
def test_gpu_matches_reference_default_launch(dtype, d, k):
    X, C, w = make_inputs(dtype, 2, 20_011, d, k, seed=d * k, weighted=True)
    ref = get_backend("torch").assign_update(X, C, w)
    for det in (False, True):
        res = get_backend("triton").assign_update(X, C, w, deterministic=det)
        check_against_oracle(X, C, w, res.labels, res.min_sq_dist, res.sums, res.counts, ref)


@pytest.mark.gpu
@requires_cuda
def test_gpu_deterministic_bit_identical_and_fast_close():
    X, C, w = make_inputs(torch.uint8, 1, 1 << 22, 3, 16, seed=11, weighted=True)
    runs = [get_backend("triton").assign_update(X, C, w, deterministic=True) for _ in range(3)]
    for r in runs[1:]:
        assert torch.equal(r.sums, runs[0].sums) and torch.equal(r.counts, runs[0].counts)
    fast = get_backend("triton").assign_update(X, C, w, deterministic=False)
    torch.testing.assert_close(fast.sums, runs[0].sums, rtol=1e-6, atol=0)


@pytest.mark.gpu
@requires_cuda
def test_gpu_contention_k2_many_points():
    n = 1 << 28
    X = torch.randint(0, 256, (1, n, 1), dtype=torch.uint8, device=DEV)
    C = torch.tensor([[[64.25], [191.25]]], device=DEV)
    _, _, sums, counts = au_kernel.assign_update(X, C, compute_labels=False)
    hi = X[0, :, 0] >= 128
    want = torch.stack([X[0, ~hi, 0].double().sum(), X[0, hi, 0].double().sum()])
    assert torch.equal(sums[0, :, 0], want.float())
    assert torch.equal(counts[0], torch.stack([(~hi).sum(), hi.sum()]).float())


@pytest.mark.gpu
@requires_cuda
def test_gpu_auto_picks_triton_and_compiles():
    X = torch.randint(0, 256, (1, 5000, 3), dtype=torch.uint8, device=DEV)
    C = torch.rand(1, 8, 3, device=DEV) * 255
    assert select_backend("auto", X, C).name == "triton"
    step = torch.compile(lambda X, C: get_backend("triton").assign_update(X, C, None).sums, fullgraph=True)
    torch.testing.assert_close(step(X, C), get_backend("triton").assign_update(X, C, None).sums)
