"""pixelkm.nn.KMeans: the module against the function form, state_dict round trip, sync-free fit, compile."""

from __future__ import annotations

import io
import shutil

import pytest
import torch
from conftest import make_blobs
from test_batched import SyncAudit

import pixelkm
import pixelkm.nn
from pixelkm.engine import sources as _sources


@pytest.fixture(scope="module")
def data():
    return torch.from_numpy(make_blobs(1500, 4, 6, seed=80, spread=1.5)).float()


def test_fit_equals_function_and_predict_equals_labels(data):
    km = pixelkm.nn.KMeans(6, random_state=3).fit(data)
    c, lab, inertia = pixelkm.kmeans(data, 6, random_state=3)
    assert torch.equal(km.centers, c)
    assert torch.equal(km.labels_, lab)
    assert float(km.inertia_) == pytest.approx(inertia, rel=1e-6)
    assert isinstance(km, torch.nn.Module)
    assert list(dict(km.named_buffers())) == ["centers"]
    labels, dist = km(data)
    assert torch.equal(labels, lab)
    assert float(dist.double().sum()) == pytest.approx(inertia, rel=1e-5)


def test_forward_against_brute_force_any_leading_shape_and_gradient(data):
    km = pixelkm.nn.KMeans(6, random_state=0).fit(data)
    X = torch.randn(3, 7, 4) * 5
    labels, dist = km(X)
    assert labels.shape == (3, 7) and dist.shape == (3, 7)
    full = torch.cdist(X.reshape(-1, 4).double(), km.centers.double()).square()
    ref_dist, ref_lab = full.min(1)
    assert torch.equal(labels.reshape(-1), ref_lab)
    torch.testing.assert_close(dist.reshape(-1).double(), ref_dist, rtol=1e-5, atol=1e-4)
    X.requires_grad_(True)
    km(X)[1].sum().backward()  # d/dx |x - c|^2 = 2 (x - c)
    torch.testing.assert_close(X.grad, 2 * (X - km.centers[labels]).detach(), rtol=1e-4, atol=1e-4)
    assert torch.equal(km.predict(X), labels)


def test_state_dict_round_trip_into_a_fresh_module(data):
    km = pixelkm.nn.KMeans(6, random_state=1).fit(data)
    buf = io.BytesIO()
    torch.save(km.state_dict(), buf)
    buf.seek(0)
    fresh = pixelkm.nn.KMeans(6)
    assert fresh.centers.shape == (6, 0)
    with pytest.raises(pixelkm.NotFittedError):
        fresh.predict(data)
    fresh.load_state_dict(torch.load(buf))
    assert fresh.n_features_in_ == 4
    assert torch.equal(fresh.centers, km.centers)
    assert torch.equal(fresh.predict(data), km.predict(data))
    # .to() moves and converts the buffer; predictions stay the same
    moved = fresh.to(torch.float64)
    assert moved.centers.dtype == torch.float64
    assert torch.equal(moved.predict(data), km.predict(data))
    # a module fitted with other features, clusters or metric refuses the state
    with pytest.raises(RuntimeError, match="do not fit KMeans"):
        pixelkm.nn.KMeans(5).load_state_dict(km.state_dict())
    with pytest.raises(RuntimeError, match="size mismatch"):
        pixelkm.nn.KMeans(6, random_state=0).fit(data[:, :3]).load_state_dict(km.state_dict())
    with pytest.raises(ValueError, match="spherical=False"):
        pixelkm.nn.KMeans(6, spherical=True).load_state_dict(km.state_dict())


def test_refit_overwrites_the_buffer_in_place_and_warm_starts(data):
    km = pixelkm.nn.KMeans(6, random_state=2, max_iter=2).fit(data)
    buffer = km.centers
    km.fit(data, init=km.centers)  # continue from the current centers
    assert km.centers is buffer
    ref = pixelkm.kmeans(data, 6, random_state=2, max_iter=4)[0]
    torch.testing.assert_close(km.centers, ref, rtol=0, atol=1e-5)


def test_fixed_iterations_fit_has_no_host_sync_and_equals_the_default(data, monkeypatch):
    ref = pixelkm.nn.KMeans(6, random_state=4, max_iter=60).fit(data)
    assert int(ref.n_iter_) < 60
    real = _sources.run_assign_update

    def backend_pass(*args, **kwargs):  # the backend is audited apart: not this module's code
        with torch.utils._python_dispatch._disable_current_modes():
            return real(*args, **kwargs)

    monkeypatch.setattr(_sources, "run_assign_update", backend_pass)
    km = pixelkm.nn.KMeans(6, random_state=4, max_iter=60, fixed_iterations=True)
    w = torch.ones(len(data))
    with SyncAudit() as audit:  # the whole fit: k-means++, tolerance, Lloyd loop, best-of selection
        km.fit(data, sample_weight=w)
    assert audit.seen == []
    with SyncAudit() as audit:  # an explicit init (the path for CUDA graphs)
        pixelkm.nn.KMeans(6, max_iter=3, fixed_iterations=True).fit(data, init=data[:6])
    assert audit.seen == []
    assert torch.equal(km.centers, ref.centers)
    assert torch.equal(km.labels_, ref.labels_)
    assert torch.equal(km.n_iter_, ref.n_iter_)
    assert isinstance(km.inertia_, torch.Tensor)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fixed_iterations_fit_captures_in_a_cuda_graph(data):
    X = data.cuda()
    init = X[:6].clone()
    km = pixelkm.nn.KMeans(6, max_iter=10, fixed_iterations=True).cuda()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph: allocations, cuBLAS handles, the buffer's shape
        km.fit(X, init=init)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        km.fit(X, init=init)
    km.centers.zero_()
    graph.replay()
    torch.cuda.synchronize()
    ref = pixelkm.nn.KMeans(6, max_iter=10).fit(X, init=init)
    torch.testing.assert_close(km.centers, ref.centers)


def _compiler_unavailable() -> str | None:
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile (dynamo) is not supported on this Python/platform"
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang", "cl")):
        return "inductor needs a C/C++ compiler to compile for the CPU, and none is on PATH"
    return None


def _check_predict_compiles(data, backend: str) -> None:
    torch._dynamo.reset()
    km = pixelkm.nn.KMeans(6, random_state=5).fit(data)
    compiled = torch.compile(km.predict, fullgraph=True, backend=backend)
    for X in (torch.randn(2, 300, 4) * 6, torch.randn(517, 4) * 6):  # a new shape recompiles, still one graph
        assert torch.equal(compiled(X), km.predict(X))


@pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile (dynamo) is not supported here")
def test_predict_traces_into_one_graph(data):
    """fullgraph=True fails on any graph break: dynamo traces predict into one graph (run by aot_eager, which
    skips inductor's C++ code generation, about 30 s on a 2-core CPU: that part is the slow test below)."""
    _check_predict_compiles(data, "aot_eager")


@pytest.mark.slow
@pytest.mark.skipif(_compiler_unavailable() is not None, reason=str(_compiler_unavailable()))
def test_predict_compiles_with_fullgraph(data):
    """The same through inductor (the default backend), which compiles C++ for the CPU."""
    _check_predict_compiles(data, "inductor")
