"""One parameter table: every entry point accepts and rejects the same values with the same message."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import make_blobs

import pixelkm
import pixelkm.distributed
import pixelkm.nn

X = make_blobs(300, 3, 4, seed=11).astype(np.float32)


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    """A one-process gloo group, so that ``pixelkm.distributed.kmeans`` runs in this process."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    path = tmp_path_factory.mktemp("pg") / "rendezvous"
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def entry_points(process_group):
    """Each entry point, as a fit of X with the given parameters (parameters it does not take are not passed)."""
    return {
        "KMeans": lambda **kw: pixelkm.KMeans(4, **kw).fit(X),
        "kmeans": lambda **kw: pixelkm.kmeans(X, 4, **kw),
        "MiniBatchKMeans": lambda **kw: pixelkm.MiniBatchKMeans(4, batch_size=64, **kw).fit(X),
        "fit_stream": lambda **kw: pixelkm.fit_stream(X, 4, **kw),
        "distributed.kmeans": lambda **kw: pixelkm.distributed.kmeans(torch.from_numpy(X), 4, **kw),
        "distributed.fit_stream": lambda **kw: pixelkm.distributed.fit_stream(X, 4, device="cpu", **kw),
        "nn.KMeans": lambda **kw: pixelkm.nn.KMeans(4, **kw).fit(torch.from_numpy(X)),
    }


TAKES = {  # the parameters each entry point has (of those checked below)
    "KMeans": {"tol", "max_iter", "random_state", "device", "n_init", "init"},
    "kmeans": {"tol", "max_iter", "random_state", "device", "n_init", "init"},
    "MiniBatchKMeans": {"tol", "max_iter", "random_state", "device", "n_init", "init"},
    "fit_stream": {"tol", "max_iter", "random_state", "device", "init"},
    "distributed.kmeans": {"tol", "max_iter", "random_state", "n_init", "init"},
    "distributed.fit_stream": {"tol", "max_iter", "random_state", "init"},
    "nn.KMeans": {"tol", "max_iter", "random_state", "n_init", "init"},
}


@pytest.mark.parametrize(
    "param, value",
    [
        ("tol", np.float32(1e-4)),
        ("tol", np.float64(0.0)),
        ("tol", 0),
        ("max_iter", np.int64(20)),
        ("random_state", np.int64(5)),
        ("random_state", 2**64 - 1),
        ("n_init", np.int32(2)),
    ],
    ids=lambda v: repr(v),
)
def test_numpy_scalars_are_accepted_everywhere(process_group, param, value):
    for name, run in entry_points(process_group).items():
        if param in TAKES[name]:
            run(**{param: value})


BAD = [
    ("tol", float("nan"), ValueError, "tol must be a finite number >= 0.0, got nan"),
    ("tol", -1.0, ValueError, "tol must be a finite number >= 0.0, got -1.0"),
    ("tol", "small", ValueError, "tol must be a finite number >= 0.0, got 'small'"),
    ("max_iter", 0, ValueError, "max_iter must be >= 1, got 0"),
    ("max_iter", 2.5, TypeError, "max_iter must be an int, got float 2.5"),
    ("random_state", 2**70, ValueError, "random_state must be an int in [0, 2**64), got 1180591620717411303424"),
    ("random_state", -1, ValueError, "random_state must be an int in [0, 2**64), got -1"),
    ("random_state", "seed", TypeError, "random_state must be None, an int, a numpy RandomState"),
    ("init", "kmeans", ValueError, "init must be one of ('k-means++', 'k-means||', 'random') or an array"),
]


@pytest.mark.parametrize("param, value, exc, message", BAD, ids=[f"{p}={v!r}" for p, v, _, _ in BAD])
def test_bad_values_are_refused_everywhere_with_the_same_message(process_group, param, value, exc, message):
    for name, run in entry_points(process_group).items():
        if param not in TAKES[name]:
            continue
        with pytest.raises(exc, match=re.escape(message)):
            run(**{param: value})


def test_n_init_is_checked_the_same_way():
    for run in (
        lambda: pixelkm.KMeans(4, n_init=0).fit(X),
        lambda: pixelkm.kmeans(X, 4, n_init=0),
        lambda: pixelkm.MiniBatchKMeans(4, n_init=0).fit(X),
        lambda: pixelkm.nn.KMeans(4, n_init=0),
    ):
        with pytest.raises(ValueError, match=re.escape("n_init must be one of ('auto',) or >= 1, got 0")):
            run()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a CPU-only torch")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_unavailable_device_names_it_and_what_is_available(device):
    message = f"device '{device}' is not available: this torch has no usable CUDA GPU; available: cpu"
    for run in (
        lambda: pixelkm.KMeans(4, device=device).fit(X),
        lambda: pixelkm.kmeans(X, 4, device=device),
        lambda: pixelkm.MiniBatchKMeans(4, device=device).fit(X),
        lambda: pixelkm.fit_stream(X, 4, device=device),
        lambda: pixelkm.predict_stream(X, X[:4], device=device),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            run()


def test_meta_device_is_refused_clearly():
    for run in (
        lambda: pixelkm.KMeans(4, device="meta").fit(X),
        lambda: pixelkm.kmeans(X, 4, device="meta"),
        lambda: pixelkm.fit_stream(X, 4, device="meta"),
    ):
        with pytest.raises(ValueError, match=r"device 'meta' cannot hold the data of a fit .*available: cpu"):
            run()


def test_chunk_sizes_take_numpy_ints():
    ref = pixelkm.assign_update(X, X[:4])
    res = pixelkm.assign_update(X, X[:4], chunk_size=np.int64(10))
    np.testing.assert_array_equal(res.labels, ref.labels)  # NumPy in, NumPy out
    fitted = pixelkm.fit_stream(X, 4, init=X[:4], chunk_rows=np.int64(100), device="cpu")
    assert fitted.n_iter >= 1
    labels, _ = pixelkm.predict_stream(X, fitted.centers, chunk_rows=np.int64(50), device="cpu")
    assert labels.shape == (300,)
    with pytest.raises(ValueError, match=re.escape("chunk_size must be >= 1, got 0")):
        pixelkm.assign_update(X, X[:4], chunk_size=0)
    with pytest.raises(TypeError, match=re.escape("chunk_rows must be an int or None, got float 10.5")):
        pixelkm.fit_stream(X, 4, chunk_rows=10.5)


def test_minibatch_refuses_nan_tol_and_negative_patience():
    with pytest.raises(ValueError, match=re.escape("tol must be a finite number >= 0.0, got nan")):
        pixelkm.MiniBatchKMeans(4, tol=float("nan")).fit(X)
    with pytest.raises(ValueError, match=re.escape("max_no_improvement must be >= 0, got -1")):
        pixelkm.MiniBatchKMeans(4, max_no_improvement=-1).fit(X)
    with pytest.raises(ValueError, match=re.escape("reassignment_ratio must be a finite number >= 0.0, got -0.1")):
        pixelkm.MiniBatchKMeans(4, reassignment_ratio=-0.1).fit(X)
    pixelkm.MiniBatchKMeans(4, max_no_improvement=None, tol=np.float32(1e-3), random_state=0).fit(X)


def test_fit_stream_refuses_an_unknown_reduce():
    with pytest.raises(ValueError, match=re.escape("reduce must be one of ('auto', True, False), got 'maybe'")):
        pixelkm.fit_stream(X, 4, reduce="maybe")
    with pytest.raises(ValueError, match=re.escape("reduce must be one of ('auto', True, False), got 1")):
        pixelkm.fit_stream(X, 4, reduce=1)


def test_the_same_unknown_backend_message_everywhere():
    message = "unknown backend 'nope'; available: auto"
    for run in (
        lambda: pixelkm.KMeans(4, backend="nope").fit(X),
        lambda: pixelkm.kmeans(X, 4, backend="nope"),
        lambda: pixelkm.MiniBatchKMeans(4, backend="nope").fit(X),
        lambda: pixelkm.fit_stream(X, 4, backend="nope"),
        lambda: pixelkm.predict_stream(X, X[:4], backend="nope"),
        lambda: pixelkm.nn.KMeans(4, backend="nope"),
        lambda: pixelkm.assign_update(X, X[:4], backend="nope"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            run()
