"""assign_update with the torch reference backend against a direct (n x k) computation in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pixelkm
from pixelkm.backends import get_backend, select_backend

DTYPES = [
    pytest.param(torch.uint8, 1e-5, 1e-2, id="uint8"),
    pytest.param(torch.float16, 1e-4, 1e-2, id="float16"),
    pytest.param(torch.bfloat16, 1e-4, 1e-2, id="bfloat16"),
    pytest.param(torch.float32, 1e-5, 1e-3, id="float32"),
    pytest.param(torch.float64, 1e-12, 1e-9, id="float64"),
]


def direct(X: torch.Tensor, C: torch.Tensor, w: torch.Tensor | None):
    """The oracle: full distance matrix in float64, argmin, one-hot sums."""
    x = X.double()
    c = C.double()
    d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    lab = d2.argmin(1)
    ww = torch.ones(x.shape[0], dtype=torch.float64) if w is None else w.double()
    onehot = torch.nn.functional.one_hot(lab, c.shape[0]).double() * ww[:, None]
    return lab, d2.gather(1, lab[:, None])[:, 0], onehot.t() @ x, onehot.sum(0), d2


def random_data(dtype, n, d, k, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        X = torch.randint(0, 256, (n, d), generator=g, dtype=torch.uint8)
        C = torch.randint(0, 256, (k, d), generator=g).float() + 0.5
    else:
        X = (torch.randn(n, d, generator=g) * 3).to(dtype)
        C = torch.randn(k, d, generator=g).to(torch.float64 if dtype == torch.float64 else torch.float32) * 3
    return X, C


def check_labels(lab, ref_lab, d2, rtol):
    """Labels equal the oracle's except where two distances tie within rounding; those are bounded."""
    diff = lab != ref_lab
    if diff.any():
        idx = torch.nonzero(diff)[:, 0]
        a = d2[idx, lab[idx]]
        b = d2[idx, ref_lab[idx]]
        assert torch.allclose(a, b, rtol=rtol, atol=rtol), "a label differs by more than rounding"
        assert diff.float().mean() < 0.01


@pytest.mark.parametrize("dtype, rtol, atol", DTYPES)
@pytest.mark.parametrize("n, d, k", [(1000, 3, 7), (517, 1, 1), (300, 16, 64), (64, 130, 5)])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_matches_direct(dtype, rtol, atol, n, d, k, weighted):
    X, C = random_data(dtype, n, d, k, seed=n + d + k)
    w = torch.rand(n, dtype=C.dtype) * 3 if weighted else None
    res = pixelkm.assign_update(X, C, w, backend="torch", chunk_size=97)
    lab, mind, sums, counts, d2 = direct(X, C, w)
    check_labels(res.labels, lab, d2, rtol=1e-5 if dtype != torch.float64 else 1e-12)
    same = res.labels == lab
    assert res.labels.dtype == torch.int64
    scale = float(d2.max())
    torch.testing.assert_close(res.min_sq_dist.double()[same], mind[same], rtol=rtol, atol=atol * scale)
    if bool(same.all()):
        xs = float(X.double().abs().max()) * (n if w is None else float(w.sum()))
        torch.testing.assert_close(res.sums.double(), sums, rtol=rtol, atol=atol * xs / 100)
        torch.testing.assert_close(res.counts.double(), counts, rtol=rtol, atol=atol * n)


def test_chunk_size_does_not_change_result():
    X, C = random_data(torch.float64, 2001, 3, 9, seed=3)
    a = pixelkm.assign_update(X, C, chunk_size=1)
    b = pixelkm.assign_update(X, C, chunk_size=2001)
    c = pixelkm.assign_update(X, C)
    for r in (b, c):
        assert torch.equal(a.labels, r.labels)
        torch.testing.assert_close(a.sums, r.sums, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(a.counts, r.counts)


def test_batched_equals_loop():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(4, 333, 5, generator=g)
    C = torch.randn(4, 6, 5, generator=g)
    w = torch.rand(4, 333, generator=g)
    res = pixelkm.assign_update(X, C, w, chunk_size=50)
    assert res.labels.shape == (4, 333) and res.sums.shape == (4, 6, 5) and res.counts.shape == (4, 6)
    for b in range(4):
        one = pixelkm.assign_update(X[b], C[b], w[b])
        assert torch.equal(one.labels, res.labels[b])
        torch.testing.assert_close(one.sums, res.sums[b])
        torch.testing.assert_close(one.counts, res.counts[b])


def test_ties_go_to_lowest_index():
    X = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    C = torch.tensor([[1.0], [-1.0], [1.0], [3.0]], dtype=torch.float64)  # x=0 ties 0/1, x=2 ties 0/2/3
    res = pixelkm.assign_update(X, C)
    assert res.labels.tolist() == [0, 0, 0]


def test_far_from_origin_keeps_precision():
    """Data at 1e6 with unit spread: the distance expansion must not lose the spread to cancellation."""
    g = torch.Generator().manual_seed(0)
    X = 1e6 + torch.randn(500, 2, generator=g)
    C = 1e6 + torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    res = pixelkm.assign_update(X, C)
    lab, mind, *_ = direct(X, C, None)
    assert (res.labels == lab).float().mean() > 0.99
    torch.testing.assert_close(res.min_sq_dist.double(), mind, rtol=1e-2, atol=0.3)


def test_numpy_input_and_no_labels():
    X = np.random.default_rng(0).normal(size=(100, 3))
    res = pixelkm.assign_update(X, X[:4], compute_labels=False)
    assert res.labels is None and res.min_sq_dist is None
    assert float(res.counts.sum()) == 100


def test_registry_and_selection():
    assert "torch" in pixelkm.available_backends()
    X = torch.zeros(3, 2)
    assert select_backend("torch", X, X).name == "torch"
    assert select_backend("auto", X, X) is not None
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        select_backend("nope", X, X)
    assert get_backend("torch").not_supported_reasons(X.to(torch.int32), X) != []


def test_env_override_is_validated(monkeypatch):
    X = torch.zeros(3, 2)
    monkeypatch.setenv("PIXELKM_BACKEND", "torch")
    assert select_backend("auto", X, X).name == "torch"
    monkeypatch.setenv("PIXELKM_BACKEND", "bogus")
    with pytest.raises(ValueError, match="unknown backend 'bogus'"):
        select_backend("auto", X, X)


@pytest.mark.parametrize(
    "X, C, w, match",
    [
        (np.zeros(5), np.zeros((2, 1)), None, "2-D or 3-D"),
        (np.zeros((0, 3)), np.zeros((2, 3)), None, "0 sample"),
        (np.zeros((4, 0)), np.zeros((2, 0)), None, "0 feature"),
        (np.array([[np.nan, 1.0]]), np.zeros((1, 2)), None, "NaN"),
        (np.array([[np.inf, 1.0]]), np.zeros((1, 2)), None, "inf"),
        (np.zeros((4, 3)), np.zeros((2, 2)), None, "centers must have shape"),
        (np.zeros((4, 3)), np.zeros((2, 3)), np.ones(3), "sample_weight must have shape"),
        (np.zeros((4, 3)), np.zeros((2, 3)), -np.ones(4), "non-negative"),
    ],
)
def test_bad_input(X, C, w, match):
    with pytest.raises(ValueError, match=match):
        pixelkm.assign_update(X, C, w)


def test_unknown_backend_error_lists_choices():
    with pytest.raises(ValueError, match=r"unknown backend .*available: auto"):
        pixelkm.assign_update(np.zeros((3, 2)), np.zeros((1, 2)), backend="cuda-magic")


def test_out_of_memory_retries_with_smaller_chunks():
    """A backend that runs out of memory above 64 rows per chunk: the pass is retried with halved chunks."""
    from pixelkm.backends import _REGISTRY, PRIORITY, register_backend
    from pixelkm.backends.torch_backend import TorchBackend

    class Tight(TorchBackend):
        name = "tight-memory"
        seen: list = []

        def assign_update(self, X, centers, w, *, chunk_size=None, **options):
            rows = chunk_size or self.chunk_rows(X, centers)
            self.seen.append(rows)
            if rows > 64:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().assign_update(X, centers, w, chunk_size=rows, **options)

    register_backend(Tight())
    try:
        X, C = random_data(torch.float64, 1000, 3, 5, seed=1)
        with pytest.warns(ResourceWarning, match="retrying with"):
            res = pixelkm.assign_update(X, C, backend="tight-memory")
        ref = pixelkm.assign_update(X, C, backend="torch")
        assert torch.equal(res.labels, ref.labels)
        torch.testing.assert_close(res.sums, ref.sums)
        assert Tight.seen[-1] <= 64 and Tight.seen == sorted(Tight.seen, reverse=True)
        km = pixelkm.KMeans(5, init=C, backend="tight-memory")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the fit starts from the chunk size that fitted: no new warning
            km.fit(X)
        assert km.inertia_ == pytest.approx(pixelkm.KMeans(5, init=C).fit(X).inertia_, rel=1e-12)
    finally:
        _REGISTRY.pop("tight-memory")
        PRIORITY.remove("tight-memory")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_bit_identical_across_chunk_sizes_and_runs(photo_pixels, dtype):
    """Deterministic on one device: the same input gives the same bits run after run and, for uint8 and
    float32 data, whatever the chunk size (sums are accumulated in float64: exact for integer pixels, and
    rounded back to float32 otherwise). float64 distances and sums may differ in the last bits across chunk
    sizes; labels and counts never do."""
    X = torch.from_numpy(photo_pixels("kodim23.png", step=4))
    if dtype != torch.uint8:
        X = X.to(dtype) / 255 + 0.01 * torch.randn(X.shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    C = X[::997][:70].to(torch.float64 if dtype == torch.float64 else torch.float32) + 0.25
    runs = [pixelkm.assign_update(X, C, chunk_size=cs) for cs in (500, 4096, None, None)]
    assert torch.equal(runs[-1].sums, runs[-2].sums)
    for r in runs[:-1]:
        assert torch.equal(r.labels, runs[-1].labels)
        assert torch.equal(r.counts, runs[-1].counts)
        if dtype == torch.float64:  # the float64 matmul blocks differently with the number of rows
            torch.testing.assert_close(r.min_sq_dist, runs[-1].min_sq_dist, rtol=1e-13, atol=1e-15)
            torch.testing.assert_close(r.sums, runs[-1].sums, rtol=1e-13, atol=0)
        else:
            assert torch.equal(r.min_sq_dist, runs[-1].min_sq_dist)
            assert torch.equal(r.sums, runs[-1].sums)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_torch_backend_distances_do_not_follow_the_chunk_size_at_large_d(dtype):
    """Above 16 features the distance to the chosen center is a row-wise sum of squared differences: the same
    bits whatever the chunk size (a matmul with a column of ones blocked by the row count: float32 distances
    differed in the last bits in 2874 of 5000 rows with chunk_size=1)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(5000, 20, generator=g, dtype=dtype)
    C = torch.randn(17, 20, generator=g, dtype=dtype)
    ref = pixelkm.assign_update(X, C, backend="torch")
    for cs in (1, 7, 64, 1000):
        r = pixelkm.assign_update(X, C, backend="torch", chunk_size=cs)
        assert torch.equal(r.labels, ref.labels)
        assert torch.equal(r.min_sq_dist, ref.min_sq_dist), cs
    exact = ((X.double() - C.double()[ref.labels]) ** 2).sum(1)
    torch.testing.assert_close(ref.min_sq_dist.double(), exact, rtol=8 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("whole", [True, False], ids=["cached", "per-chunk"])
def test_cache_of_a_fit_gives_the_passes_of_a_fresh_call(monkeypatch, dtype, whole):
    """Passes that reuse the data prepared by the first pass (the Lloyd loop's cache) against fresh calls and the
    float64 oracle; with the cache over its byte budget each chunk is prepared afresh into the cached buffers."""
    from pixelkm.backends import torch_backend

    if not whole:
        monkeypatch.setattr(torch_backend, "CACHE_BYTES", 0)
    be = get_backend("torch")
    g = torch.Generator().manual_seed(3)
    X, C = random_data(dtype, 3000, 3, 9, seed=5)
    Xb = X.unsqueeze(0).expand(2, -1, -1).contiguous()
    w = torch.rand(2, 3000, generator=g, dtype=C.dtype)
    cache: dict = {}
    for step in range(3):  # different centers each pass, as in a fit
        Cb = torch.stack([C + step, C - 2.0 * step])
        got = be.assign_update(Xb, Cb, w, chunk_size=700, cache=cache)
        assert cache["torch"].whole == whole
        fresh = be.assign_update(Xb, Cb, w, chunk_size=700)
        for i in range(2):
            lab, dist, sums, counts, _ = direct(X, Cb[i], w[i])
            assert torch.equal(got.labels[i], lab) and torch.equal(fresh.labels[i], lab)
            torch.testing.assert_close(got.min_sq_dist[i].double(), dist, rtol=1e-5, atol=1e-3)
            torch.testing.assert_close(got.sums[i].double(), sums, rtol=1e-6, atol=0)
            torch.testing.assert_close(got.counts[i].double(), counts, rtol=1e-6, atol=0)
    first = cache["torch"]
    be.assign_update(Xb[:1], C.unsqueeze(0), None, chunk_size=700, cache=cache)  # other data: prepared again
    assert cache["torch"] is not first and cache["torch"].key[1] == (1, 3000, 3)
    # the problems kept by a batched fit keep their prepared data (the same numbers, the same shift)
    kept = first.select(torch.tensor([1]), Xb[1:].clone(), w[1:].clone())
    assert torch.equal(kept.chunk(0, 700)[0], first.chunk(0, 700)[0][1:])
    assert torch.equal(kept.shift, first.shift[1:])


def test_labels_without_distances():
    X, C = random_data(torch.float32, 2000, 5, 6, seed=8)
    full = pixelkm.assign_update(X, C)
    res = get_backend("torch").assign_update(X.unsqueeze(0), C.unsqueeze(0), None, compute_distances=False)
    assert res.min_sq_dist is None
    assert torch.equal(res.labels[0], full.labels)
    assert torch.equal(res.sums[0], full.sums) and torch.equal(res.counts[0], full.counts)
