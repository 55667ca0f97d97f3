"""Out-of-core k-means: fit data that fits neither in device memory nor in RAM, one chunk at a time.

A *source* yields row chunks of shape (r, d): a NumPy array or memmap, a ``.npy`` file, an image file (read in
strips, see :mod:`pixelkm._strips`), a list of chunks, or a callable returning an iterable of chunks (called once
per pass). Chunks flow to the device through two pinned host buffers and two device buffers: the copy of chunk
j + 1 (on its own CUDA stream) overlaps the compute on chunk j, and a reader thread overlaps disk reads with both.

Each Lloyd iteration is one pass: ``run_assign_update`` on every chunk, sums and counts accumulated in float64;
empty clusters take the farthest points, found in the same pass (the k farthest candidates are kept per chunk,
ties to the lowest row, as the in-memory fit does). For uint8 data of up to 3 features (RGB pixels) the fit is
instead exact on the data's color histogram: one pass counts the colors, the fit runs in memory on the
distinct colors weighted by their counts, and a lookup table gives every pixel its label in the output pass.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _init
from ._files import refuse_inputs
from ._histogram import color_histogram, histogram_keys, pack_keys, rescaled_tol, unpack_keys, weighted_variance
from ._init_scalable import Moments, default_coreset_size, lightweight_coreset, resolve_init
from ._kmeans import _check_int, fit_batched
from ._lloyd import centers_from, ordered_farthest, relocate_empty_clusters
from ._result import AssignUpdateResult
from ._strips import NpyWriter, image_layout, read_strips
from ._validation import (
    as_tensor,
    check_data,
    check_largest,
    check_magnitude,
    compute_dtype,
    is_sparse,
    resolve_generator,
    warn_fewer_clusters,
)
from .backends import get_backend
from .ops import run_assign_update

_NP_TO_TORCH = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}
#: rows per chunk on the CPU when no memory cap is given
_CPU_ROWS = 1 << 21
#: rows per chunk of the CPU histogram pass (its per-chunk cost is a bincount, larger chunks amortize it)
_HIST_ROWS = 1 << 23
#: device memory used per chunk on an accelerator when no cap is given
_GPU_CHUNK_BYTES = 1 << 30


# ---------------------------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------------------------
class Source:
    """Row chunks of shape (r, d), re-readable once per pass unless ``reiterable`` is False."""

    n_features: int
    dtype: np.dtype
    n_samples: int | None = None  # None until a first pass has counted them
    shape: tuple[int, ...] | None = None  # the array/image shape, for outputs of the same shape
    reiterable: bool = True

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        raise NotImplementedError


class ArraySource(Source):
    """An in-RAM array or memmap of shape (n, d) or an image (H, W[, C]). Memmaps with a file are read by file I/O."""

    def __init__(self, X: np.ndarray | torch.Tensor) -> None:
        if is_sparse(X):
            raise TypeError("sparse input is not supported by the stream; pass a dense array, a .npy or chunks")
        if isinstance(X, torch.Tensor):
            X = _tensor_to_numpy(X)
        if X.ndim not in (1, 2, 3):
            raise ValueError(f"an array source must be (n,), (n, d) or an image (H, W, C), got shape {X.shape}")
        self.shape = tuple(X.shape)
        self.X = X.reshape(-1, X.shape[-1] if X.ndim == 3 else (1 if X.ndim == 1 else X.shape[1]))
        self.n_samples, self.n_features = self.X.shape
        self.dtype = _check_dtype(self.X.dtype)
        self._file = _memmap_position(X)

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        if self._file is None:
            for s in range(0, self.n_samples, rows):
                yield self.X[s : s + rows]
            return
        yield from _file_rows(self._file[0], self._file[1], self.n_samples, self.n_features, self.dtype, rows)


def _memmap_position(X: np.ndarray) -> tuple[str, int] | None:
    """(file, byte offset of X's first element) for a C-contiguous view of a file memmap, else None.

    Such data is then read with file reads, so that the pages read never count in this process's resident memory.
    """
    mm = getattr(X, "_mmap", None)
    if not isinstance(X, np.memmap) or mm is None or not X.filename or not X.flags.c_contiguous:
        return None
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    start = X.offset - X.offset % mmap.ALLOCATIONGRANULARITY
    return X.filename, start + (X.ctypes.data - base)


def _file_rows(path: str, offset: int, n: int, d: int, dtype: np.dtype, rows: int) -> Iterator[np.ndarray]:
    from ._strips import _readinto_exact

    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        for s in range(0, n, rows):
            out = np.empty((min(rows, n - s), d), dtype=dtype)
            _readinto_exact(f, out)
            yield out


class FileSource(Source):
    """A ``.npy`` file or an image file; pixels become rows of shape (H * W, C), read strip by strip."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.layout = image_layout(self.path)
        self.shape = self.layout.shape
        self.dtype = _check_dtype(self.layout.dtype)
        if self.path.endswith(".npy") and len(self.shape) == 2:  # (n, d) data, not an (H, W) gray image
            self.n_samples, self.n_features = self.shape
            self._row_elems = 1
        else:
            self.n_features = self.shape[2] if len(self.shape) == 3 else 1
            self.n_samples = self.shape[0] * self.shape[1]
            self._row_elems = self.shape[1]

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        if self.layout.strip_readable and self.layout.tiles[0].offset and self.path.endswith(".npy"):
            t = self.layout.tiles[0]
            yield from _file_rows(self.path, t.offset, self.n_samples, self.n_features, self.dtype, rows)
            return
        strip_rows = max(1, rows // self._row_elems)
        for _, strip in read_strips(self.path, strip_rows, layout=self.layout):
            yield strip.reshape(-1, self.n_features)


class IterableSource(Source):
    """Chunks from a list/tuple, from a callable returning a fresh iterable per pass, or a one-shot iterator."""

    def __init__(self, obj: Any) -> None:
        if callable(obj):
            self._make = obj
        elif isinstance(obj, (list, tuple)):
            self._make = lambda: iter(obj)
        else:
            it = iter(obj)
            self.reiterable = False
            self._make = lambda: it
        self._first = None
        first = self._peek()
        self.n_features = first.shape[1]
        self.dtype = first.dtype

    def _peek(self) -> np.ndarray:
        it = iter(self._make())
        try:
            first = _as_rows(next(it))
        except StopIteration:
            raise ValueError("the chunk source yields no data") from None
        if not self.reiterable:
            self._first = first
            self._rest = it
        return first

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        if not self.reiterable:
            if self._first is None:
                raise ValueError("a one-shot iterator can be read once; pass a list or a callable for several passes")
            first, self._first = self._first, None
            chunks = _chain(first, self._rest)
        else:
            chunks = (_as_rows(c) for c in self._make())
        n = 0
        for c in chunks:
            if c.shape[1] != self.n_features or c.dtype != self.dtype:
                raise ValueError(
                    f"every chunk must be ({self.n_features} features, {self.dtype}); got "
                    f"{c.shape[1]} features, {c.dtype}"
                )
            n += c.shape[0]
            for s in range(0, c.shape[0], rows):
                yield c[s : s + rows]
        self.n_samples = n


def _chain(first: np.ndarray, rest: Iterator) -> Iterator[np.ndarray]:
    yield first
    for c in rest:
        yield _as_rows(c)


def _tensor_to_numpy(t: torch.Tensor) -> np.ndarray:
    """A host tensor as NumPy; bfloat16 (which NumPy lacks) as float32, which holds every bfloat16 value exactly."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def _as_rows(c: Any) -> np.ndarray:
    if is_sparse(c):
        raise TypeError("sparse chunks are not supported; pass dense arrays or tensors")
    if isinstance(c, torch.Tensor):
        c = _tensor_to_numpy(c)
    c = np.asarray(c)
    if c.ndim == 3:
        c = c.reshape(-1, c.shape[-1])
    if c.ndim == 1:
        c = c.reshape(-1, 1)
    if c.ndim != 2:
        raise ValueError(f"chunks must be 2-D (rows, features), got shape {c.shape}")
    _check_dtype(c.dtype)
    return c


def _check_dtype(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in _NP_TO_TORCH:
        raise TypeError(f"streamed data must be uint8, float16, float32 or float64, got {dtype}")
    return dtype


def as_source(data: Any) -> Source:
    """A :class:`Source` from an array, memmap, tensor, path (.npy or image), list of chunks, callable or iterator."""
    if isinstance(data, Source):
        return data
    if isinstance(data, (str, os.PathLike)):
        return FileSource(data)
    if isinstance(data, (np.ndarray, torch.Tensor)) or is_sparse(data):
        return ArraySource(data)
    return IterableSource(data)


class StreamWeights:
    """One non-negative weight per row of a source, read alongside its chunks (whatever their sizes).

    ``weights``: a 1-D NumPy array or memmap, a tensor, or the path of a 1-D ``.npy`` (read with file reads, so
    that a weights file as large as the data does not count in the resident memory).
    """

    def __init__(self, weights: Any, n_rows: int | None) -> None:
        if isinstance(weights, (str, os.PathLike)):
            weights = np.load(os.fspath(weights), mmap_mode="r")
        if isinstance(weights, torch.Tensor):
            weights = weights.detach().cpu().numpy()
        if not isinstance(weights, np.ndarray):
            weights = np.asarray(weights)
        if weights.ndim != 1:
            raise ValueError(f"sample_weight must be 1-D, one weight per row, got shape {weights.shape}")
        if weights.dtype.kind not in "fiub":
            raise TypeError(f"sample_weight must be numeric, got {weights.dtype}")
        if n_rows is not None and len(weights) != n_rows:
            raise ValueError(f"sample_weight has {len(weights)} values for {n_rows} rows")
        if weights.dtype not in _NP_TO_TORCH:  # integers: converted once (a memmap of them is read whole)
            weights = np.asarray(weights, dtype=np.float64)
        self.n = len(weights)
        self.source = ArraySource(weights)  # (n,) reads as (n, 1), a memmap with file reads

    def reader(self, device: torch.device, dtype: torch.dtype, rows: int) -> Callable[[int | None], Any]:
        """``take(r)``: (the next r weights as a tensor on ``device``, their float64 sum), checked on the host before
        the copy (no device sync per chunk); ``take(None)`` at the end of the pass checks that none is left over."""
        chunks = self.source.chunks(rows)
        left = np.empty(0, dtype=self.source.dtype)

        def take(r: int | None):
            nonlocal left
            if r is None:
                if left.size or next(chunks, None) is not None:
                    raise ValueError(f"sample_weight has {self.n} values, more than the data's rows")
                return None
            parts, have = [left], left.size
            while have < r:
                c = next(chunks, None)
                if c is None:
                    raise ValueError(f"sample_weight has {self.n} values, fewer than the data's rows")
                parts.append(c.reshape(-1))
                have += parts[-1].size
            every = np.concatenate(parts) if len(parts) > 1 else parts[0]
            out, left = every[:r], every[r:]
            if not (np.isfinite(out).all() and (out >= 0).all()):
                raise ValueError("sample_weight must be finite and non-negative")
            w = torch.from_numpy(np.ascontiguousarray(out)).to(device=device, dtype=dtype)
            return w, float(out.sum(dtype=np.float64))

        return take


# ---------------------------------------------------------------------------------------------------------------
# the chunk pipeline: reader thread -> pinned host buffers -> device buffers
# ---------------------------------------------------------------------------------------------------------------
def _prefetch(it: Iterator[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
    """Run ``it`` on a reader thread, ``depth`` chunks ahead (file reads release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for c in it:
                if stop.is_set():
                    return
                q.put(c)
            q.put(done)
        except Exception as e:  # noqa: BLE001 (re-raised in the consumer)
            q.put(e)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            c = q.get()
            if c is done:
                return
            if isinstance(c, BaseException):
                raise c
            yield c
    finally:
        stop.set()
        while t.is_alive():  # unblock a reader waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.01)


def device_chunks(chunks: Iterable[np.ndarray], device: torch.device, rows: int) -> Iterator[torch.Tensor]:
    """Tensors on ``device`` for each host chunk. On CUDA: pinned, double-buffered, copies on their own stream.

    A yielded device tensor is valid until the generator is advanced twice (it is then overwritten).
    """
    if device.type != "cuda":
        for c in chunks:
            yield as_tensor(np.ascontiguousarray(c))[0].to(device)
        return
    pinned, dev = [None, None], [None, None]
    copied: list[torch.cuda.Event | None] = [None, None]
    consumed: list[torch.cuda.Event | None] = [None, None]
    copy_stream = torch.cuda.Stream(device)
    compute = torch.cuda.current_stream(device)
    for j, c in enumerate(chunks):
        i = j % 2
        r, d = c.shape
        t = _NP_TO_TORCH[c.dtype]
        if pinned[i] is None or pinned[i].shape[0] < r or pinned[i].dtype != t or pinned[i].shape[1] != d:
            pinned[i] = torch.empty((max(r, rows), d), dtype=t, pin_memory=True)
            dev[i] = torch.empty((max(r, rows), d), dtype=t, device=device)
            copied[i] = consumed[i] = None
        if copied[i] is not None:
            copied[i].synchronize()  # the previous copy out of pinned[i] has finished
        pinned[i][:r].numpy()[...] = c  # host copy overlaps the GPU's work on the previous chunk
        with torch.cuda.stream(copy_stream):
            if consumed[i] is not None:
                copy_stream.wait_event(consumed[i])  # dev[i] no longer read by the compute of chunk j - 2
            dev[i][:r].copy_(pinned[i][:r], non_blocking=True)
            copied[i] = torch.cuda.Event()
            copied[i].record(copy_stream)
        compute.wait_event(copied[i])
        yield dev[i][:r]
        consumed[i] = torch.cuda.Event()
        consumed[i].record(compute)


def plan_rows(
    n_features: int, itemsize: int, n_clusters: int, device: torch.device, max_device_memory: int | None
) -> tuple[int, int | None]:
    """(rows per streamed chunk, rows per assign_update block) within ``max_device_memory`` bytes.

    Per streamed row: two device input buffers, labels (8 B) and distances (4 B) of the chunk. Per block row: the
    float copy of the rows and the (rows, k) distance block, counted three times for temporaries. A quarter of the
    cap goes to blocks, the rest to the chunk buffers.
    """
    if max_device_memory is None:
        if device.type == "cpu":
            return _CPU_ROWS, None
        budget = _GPU_CHUNK_BYTES
    else:
        budget = int(max_device_memory)
        if budget < 1 << 20:
            raise ValueError(f"max_device_memory must be at least 1 MiB, got {budget} bytes")
    per_row = 2 * n_features * itemsize + 12
    block_row = 3 * 4 * (n_features + n_clusters)
    rows = max(1024, (budget * 3 // 4) // per_row)
    block = max(256, (budget // 4) // block_row)
    return int(rows), int(min(block, rows))


class _Progress:
    """One tqdm bar over the rows of each data pass, its label naming the pass and the iteration (tqdm optional)."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.bar = None
        self.passes = 0
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, unit="row", unit_scale=True, dynamic_ncols=True)

    def start(self, what: str, total: int | None) -> None:
        self.passes += 1
        if self.bar is not None:
            self.bar.reset(total=total)
            self.bar.set_description(f"pass {self.passes}: {what}")

    def update(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------------------------
# the streamed fit
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class StreamFit:
    """Result of :func:`fit_stream`.

    centers : ndarray of shape (n_clusters, n_features), float32 (float64 for float64 data)
    inertia : float, sum of (weighted) squared distances of every row to its center
    n_iter : int, Lloyd iterations
    n_passes : int, passes over the data (including init, histogram and output passes)
    n_distinct : int or None, distinct rows when the fit ran on the histogram
    seconds : float, wall time
    """

    centers: np.ndarray
    inertia: float
    n_iter: int
    n_passes: int
    n_distinct: int | None
    seconds: float


class _Runner:
    """Shared state of one streamed job: source, device, chunk plan, progress."""

    def __init__(
        self,
        source: Source,
        device: torch.device,
        rows: int,
        block: int | None,
        progress: bool,
        weights: StreamWeights | None = None,
        weight_dtype: torch.dtype = torch.float32,
    ):
        self.source, self.device, self.rows, self.block = source, device, rows, block
        self.progress = _Progress(progress, source.n_samples)
        self.passes = 0
        self.weights, self.weight_dtype = weights, weight_dtype

    def pairs(self, what: str, rows: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(chunk, its weights or None) for every chunk of one pass."""
        if self.weights is None:
            for x in self.chunks(what, rows):
                yield x, None
            return
        take = self.weights.reader(self.device, self.weight_dtype, rows or self.rows)
        total = 0.0
        for x in self.chunks(what, rows):
            w, w_sum = take(x.shape[0])
            total += w_sum
            yield x, w
        take(None)
        if total <= 0:
            raise ValueError("sample_weight sums to zero: at least one row must have a positive weight")

    def chunks(self, what: str, rows: int | None = None) -> Iterator[torch.Tensor]:
        if self.passes and not self.source.reiterable:
            raise ValueError(
                "this fit needs several passes over the data but the source is a one-shot iterator; "
                "pass a list or a callable returning the chunks, or use MiniBatchKMeans.partial_fit"
            )
        self.passes += 1
        self.progress.start(what, self.source.n_samples)
        rows = rows or self.rows
        check = self.source.dtype.kind == "f"
        largest = None  # on an accelerator, the largest magnitude so far (a device value: no sync per chunk)
        for x in device_chunks(_prefetch(self.source.chunks(rows)), self.device, rows):
            if check and x.numel():  # NaN, inf or out-of-range values: the same error as KMeans.fit, every pass
                if x.device.type == "cpu":
                    check_magnitude(x, "X")
                else:
                    amax = torch.linalg.vector_norm(x, float("inf"))
                    largest = amax if largest is None else torch.maximum(largest, amax)
            yield x
            self.progress.update(x.shape[0])
        if largest is not None:
            check_largest(float(largest), self.source.n_features, x.dtype, "X")


def _lloyd_pass(run: _Runner, centers: torch.Tensor, backend: str, label: str, labels_out=None):
    """One pass: float64 sums, counts and inertia (weighted when the run has weights), and the k farthest rows of
    positive weight (value, distance, label, weight)."""
    k, d = centers.shape
    sums = torch.zeros(k, d, dtype=torch.float64, device=centers.device)
    counts = torch.zeros(k, dtype=torch.float64, device=centers.device)
    inertia = torch.zeros((), dtype=torch.float64, device=centers.device)
    far_x = far_d = far_l = far_w = None
    for x, w in run.pairs(label) if labels_out is None else ((x, None) for x in run.chunks(label)):
        wb = None if w is None else w.unsqueeze(0)
        res = run_assign_update(x.unsqueeze(0), centers.unsqueeze(0), wb, backend=backend, chunk_size=run.block)
        sums += res.sums[0].double()
        counts += res.counts[0].double()
        dist = res.min_sq_dist[0].double()
        inertia += dist.sum() if w is None else (dist * w.double()).sum()
        if labels_out is not None:
            labels_out(res.labels[0])
            continue
        if w is not None:  # a row of zero weight never refills an empty cluster
            dist = dist.masked_fill(w <= 0, -torch.inf)
        cd, idx = ordered_farthest(dist.unsqueeze(0), min(k, dist.numel()))
        cd, idx = cd[0], idx[0]
        cx, cl = x[idx].to(centers.dtype), res.labels[0, idx]
        cw = torch.ones_like(cd, dtype=centers.dtype) if w is None else w[idx].to(centers.dtype)
        if far_x is not None:
            cx, cd, cl, cw = (torch.cat(p) for p in ((far_x, cx), (far_d, cd), (far_l, cl), (far_w, cw)))
        keep = torch.sort(cd, descending=True, stable=True).indices[:k]  # ties: the earlier row first
        far_x, far_d, far_l, far_w = cx[keep], cd[keep], cl[keep], cw[keep]
    return sums, counts, inertia, (far_x, far_d, far_l, far_w)


def _stream_lloyd(
    run: _Runner, centers: torch.Tensor, max_iter: int, abs_tol: float, backend: str, verbose: bool
) -> tuple[torch.Tensor, float, int]:
    n_iter = 0
    for it in range(max_iter):
        sums, counts, inertia, (fx, fd, fl, fw) = _lloyd_pass(run, centers, backend, f"Lloyd iteration {it + 1}")
        res = AssignUpdateResult(fl.unsqueeze(0), fd.unsqueeze(0), sums.unsqueeze(0), counts.unsqueeze(0))
        res = relocate_empty_clusters(res, fx.unsqueeze(0), None if run.weights is None else fw.unsqueeze(0))
        new = centers_from(res, centers.unsqueeze(0))[0]
        shift = float((new - centers).double().square().sum())
        centers = new
        n_iter += 1
        if verbose:
            print(f"Iteration {it}: inertia {float(inertia):.6g}, center shift {shift:.6g}")
        if shift <= abs_tol:  # identical labels give identical sums, hence a zero shift: the same stop as in memory
            break
    return centers, n_iter


def _histogram_pass(run: _Runner) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Distinct rows (m, d) uint8, their counts (m,) float64 and their summed weights (m,) float64 (None without
    weights) of uint8 data with d <= 3, in one pass."""
    d = run.source.n_features
    table = torch.zeros(1 << (8 * d), dtype=torch.int64, device=run.device)
    wtable = None if run.weights is None else torch.zeros(table.numel(), dtype=torch.float64, device=run.device)
    rows = max(run.rows, _HIST_ROWS) if run.device.type == "cpu" and run.rows == _CPU_ROWS else None
    for x, w in run.pairs("color histogram", rows=rows):
        keys, counts, wsum, _ = histogram_keys(pack_keys(x), d, w, inverse=False)  # dense or sorted, by chunk size
        table.index_add_(0, keys.long(), counts.long())
        if wtable is not None:
            wtable.index_add_(0, keys.long(), wsum)
    present = torch.nonzero(table).squeeze(1)
    return unpack_keys(present.to(torch.int32), d), table[present].double(), None if wtable is None else wtable[present]


def fit_stream(
    data: Any,
    n_clusters: int,
    *,
    sample_weight: Any = None,
    init: Any = "k-means++",
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: Any = None,
    reduce: bool | str = "auto",
    coreset_size: int | None = None,
    backend: str = "auto",
    device: str | torch.device | None = None,
    max_device_memory: int | None = None,
    chunk_rows: int | None = None,
    progress: bool = False,
    verbose: bool = False,
) -> StreamFit:
    """K-means of data read chunk by chunk: arrays, memmaps, .npy or image files, lists or callables of chunks.

    Parameters
    ----------
    data : source of rows of shape (n_samples, n_features)
        A NumPy array or memmap (an image (H, W, C) gives H * W rows), a path to a ``.npy`` file or an image file
        (read in strips where the format allows), a list of chunks, a callable returning an iterable of chunks
        (called once per pass), or a one-shot iterator (only for the one-pass histogram fit).
    n_clusters : int
    sample_weight : 1-D array, memmap, tensor or path of a 1-D ``.npy``, optional
        One non-negative weight per row, read alongside the data (a weights file is read with file reads too).
        Sums, counts, the inertia, the init and the refill of empty clusters are weighted, as in
        :class:`pixelkm.KMeans`; ``tol`` stays relative to the unweighted variance, as there.
    init : {"k-means++", "k-means||", "random"} or array of shape (n_clusters, n_features)
        A string init runs on the color histogram (uint8 data) or on a lightweight coreset drawn in two passes.
    max_iter, tol, random_state, backend :
        As in :class:`pixelkm.KMeans`; ``tol`` is relative to the mean feature variance of all the rows.
    reduce : "auto" or bool
        "auto" fits uint8 data of up to 3 features on its exact histogram (one counting pass, then the fit in
        memory on the distinct rows); False always streams Lloyd passes.
    coreset_size : int, optional
        Size of the coreset a string init runs on when streaming Lloyd passes.
    device : str or torch.device, optional
        Where the compute runs (default: CUDA when available, else the CPU).
    max_device_memory : int, optional
        Bytes of device memory the stream may use for its buffers and blocks (default: 1 GiB on accelerators).
    chunk_rows : int, optional
        Rows per streamed chunk (default: from ``max_device_memory``; 2^21 on the CPU).
    progress : bool
        Show a progress bar (tqdm) per data pass, labelled with the pass and the iteration.
    """
    t0 = time.perf_counter()
    k = _check_int(n_clusters, "n_clusters", 1)
    max_iter = _check_int(max_iter, "max_iter", 1)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    if backend != "auto":
        get_backend(backend)
    source = as_source(data)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows, block = plan_rows(source.n_features, source.dtype.itemsize, k, dev, max_device_memory)
    if chunk_rows is not None:
        rows = _check_int(chunk_rows, "chunk_rows", 1)
        block = None if block is None else min(block, rows)
    cdt = compute_dtype(_NP_TO_TORCH[source.dtype])
    weights = None if sample_weight is None else StreamWeights(sample_weight, source.n_samples)
    run = _Runner(source, dev, rows, block, progress, weights, cdt)
    gen = resolve_generator(random_state)
    use_hist = reduce is True or (reduce == "auto" and source.dtype == np.uint8 and source.n_features <= 3)
    if use_hist and (source.dtype != np.uint8 or source.n_features > 3):
        raise ValueError("reduce=True needs uint8 data of at most 3 features")
    try:
        if use_hist:
            colors, counts, wsums = _histogram_pass(run)
            fewer = colors.shape[0] < k  # then the streamed Lloyd passes below fit (and warn), as in memory
            if fewer and (reduce is True or not source.reiterable or k > int(counts.sum())):
                raise ValueError(f"n_clusters={k} is more than the {colors.shape[0]} distinct rows of the data")
            use_hist = not fewer
        if use_hist:
            if verbose:
                print(f"Histogram: {int(counts.sum())} rows, {colors.shape[0]} distinct")
            tol_h = rescaled_tol(tol, colors, weighted_variance(colors, counts))  # unweighted, as in memory
            fit_w = (counts if wsums is None else wsums).to(cdt)
            init_c = init
            if not isinstance(init, str) or init == "k-means||":  # fit_batched takes k-means|| as explicit centers
                init_c = resolve_init(init, colors, fit_w, k, gen, cdt).unsqueeze(0)
            centers, _, inertia, n_iter = fit_batched(
                colors.unsqueeze(0),
                fit_w.unsqueeze(0),
                n_clusters=k,
                init=init_c,
                n_init=1,
                max_iter=max_iter,
                tol=tol_h,
                generator=gen,
                backend=backend,
                verbose=verbose,
            )
            return StreamFit(
                centers[0].cpu().numpy(),
                float(inertia[0]),
                int(n_iter[0]),
                run.passes,
                colors.shape[0],
                time.perf_counter() - t0,
            )
        if not source.reiterable:
            raise ValueError(
                "a streamed Lloyd fit needs several passes but the source is a one-shot iterator; pass "
                "a list or a callable returning the chunks, or use MiniBatchKMeans.partial_fit"
            )
        moments = None
        if tol > 0 or isinstance(init, str):
            moments = Moments()
            for x, w in run.pairs("moments"):
                moments.add(x, w)
        if source.n_samples is not None and k > source.n_samples:
            raise ValueError(f"n_clusters={k} must be <= n_samples={source.n_samples}")
        if isinstance(init, str):
            m = coreset_size or default_coreset_size(k)
            pts, w = lightweight_coreset(lambda: run.pairs("coreset"), m, gen, cdt, moments)
            centers = resolve_init(init, pts, w, k, gen, cdt)
        else:
            shape_only = torch.empty((1, 1, source.n_features), dtype=cdt)
            centers = _init.explicit_init(init, shape_only, k, cdt)[0]
        centers = centers.to(dev)
        abs_tol = float(moments.variance()) * tol if tol > 0 else 0.0
        centers, n_iter = _stream_lloyd(run, centers, max_iter, abs_tol, backend, verbose)
        if k > source.n_samples:
            raise ValueError(f"n_clusters={k} must be <= n_samples={source.n_samples}")
        _, counts, inertia, _ = _lloyd_pass(run, centers, backend, "final inertia")
        warn_fewer_clusters((counts > 0).unsqueeze(0), k)
        return StreamFit(centers.cpu().numpy(), float(inertia), n_iter, run.passes, None, time.perf_counter() - t0)
    finally:
        run.progress.close()


def _source_files(source: Source) -> list[str]:
    """The files a source reads (a path, or the file behind a memmap): outputs never replace them."""
    files = [getattr(source, "path", None)]
    if getattr(source, "_file", None) is not None:
        files.append(source._file[0])
    return [f for f in files if f is not None]


def _use_lut(n: int | None, d: int) -> bool:
    """Label all 2^(8 d) colors up front when that costs at most half a pass over the n rows."""
    return n is not None and n >= 2 << (8 * d)


def predict_stream(
    data: Any,
    centers: Any,
    out: str | os.PathLike | np.ndarray | Callable[[np.ndarray], None] | None = None,
    *,
    quantize: bool = False,
    backend: str = "auto",
    device: str | torch.device | None = None,
    max_device_memory: int | None = None,
    chunk_rows: int | None = None,
    progress: bool = False,
    force: bool = False,
) -> tuple[np.ndarray | None, float]:
    """Label every row of a source against ``centers`` in one pass; returns (labels or None, inertia).

    ``out`` receives, chunk by chunk, the labels (the smallest unsigned dtype that holds them) or, with
    ``quantize=True``, each row's center (rounded to uint8 for uint8 data): a ``.npy`` path (written with plain
    writes, in the source's shape), a preallocated array of n rows, or a callable. With ``out=None`` the labels
    come back as an array of n rows (in RAM). For uint8 data of up to 3 features the labels come from a lookup
    table over every possible color (computed once), not from distances.

    A ``.npy`` path is written through a temporary file: an existing file is replaced only with ``force=True``, and
    the input file (also through symlinks or hard links) never.
    """
    source = as_source(data)
    if isinstance(out, (str, os.PathLike)):  # before any work
        refuse_inputs(out, _source_files(source))
        if os.path.exists(out) and not force:
            raise FileExistsError(f"{out} exists; pass force=True to overwrite it")
    C, _ = as_tensor(centers, "centers")
    check_data(C, "centers", ndims=(2,))
    k, d = C.shape
    if d != source.n_features:
        raise ValueError(f"centers have {d} features, the data {source.n_features}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cdt = compute_dtype(_NP_TO_TORCH[source.dtype])
    C = C.to(device=dev, dtype=cdt)
    rows, block = plan_rows(d, source.dtype.itemsize, k, dev, max_device_memory)
    if chunk_rows is not None:
        rows = _check_int(chunk_rows, "chunk_rows", 1)
        block = None if block is None else min(block, rows)
    run = _Runner(source, dev, rows, block, progress)
    lab_dtype = np.uint8 if k <= 256 else (np.uint16 if k <= 65536 else np.int64)
    palette = C.round().clamp(0, 255).to(torch.uint8) if source.dtype == np.uint8 else C
    lut = lut_inertia = None
    by_color = source.dtype == np.uint8 and d <= 3
    if by_color and _use_lut(source.n_samples, d):  # label every possible color once: a lookup per row
        every = unpack_keys(torch.arange(1 << (8 * d), device=dev, dtype=torch.int32), d)
        r = run_assign_update(every.unsqueeze(0), C.unsqueeze(0), None, backend=backend, chunk_size=block)
        # what each color becomes (its palette color, or its label in the output dtype) and its squared distance
        lut = palette[r.labels[0]] if quantize else r.labels[0].to(_NP_TO_TORCH.get(np.dtype(lab_dtype), torch.int64))
        lut_inertia = r.min_sq_dist[0]
        del every, r
    collected, written = [], [0]
    writer = None
    if isinstance(out, (str, os.PathLike)):
        if source.n_samples is None:
            raise ValueError("writing a .npy needs the number of rows: pass an array, a .npy or an image file")
        image = source.shape is not None and len(source.shape) == 3
        rows_shape = tuple(source.shape[:2]) if image else (source.n_samples,)
        out_dtype = palette.cpu().numpy().dtype if quantize else lab_dtype
        writer = NpyWriter(
            out, rows_shape + ((d,) if quantize else ()), out_dtype, force=force, inputs=_source_files(source)
        )

    def emit(labels: torch.Tensor, mapped: bool = False) -> None:
        block_out = (labels if mapped or not quantize else palette[labels]).cpu().numpy()
        if not quantize:
            block_out = block_out.astype(lab_dtype, copy=False)
        if writer is not None:
            writer.write(block_out)
        elif isinstance(out, np.ndarray):
            s = written[0]
            out.reshape(-1, *block_out.shape[1:])[s : s + block_out.shape[0]] = block_out
        elif callable(out):
            out(block_out)
        else:
            collected.append(block_out)
        written[0] += block_out.shape[0]

    try:
        if lut is not None:
            inertia = 0.0
            for x in run.chunks("labels"):
                keys = pack_keys(x)
                emit(lut[keys], mapped=True)
                inertia += float(lut_inertia[keys].sum(dtype=torch.float64))
        elif by_color:  # label the distinct colors of each chunk, then every row through the inverse index
            inertia = 0.0
            for x in run.chunks("labels"):
                h = color_histogram(x)
                r = run_assign_update(h.colors.unsqueeze(0), C.unsqueeze(0), None, backend=backend, chunk_size=block)
                emit(r.labels[0][h.inverse])
                inertia += float((r.min_sq_dist[0].double() * h.counts).sum())
        else:
            _, _, inertia_t, _ = _lloyd_pass(run, C, backend, "labels", labels_out=emit)
            inertia = float(inertia_t)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    finally:
        run.progress.close()
    if writer is not None:
        writer.close()
    labels = np.concatenate(collected) if out is None else None
    return labels, inertia


__all__ = [
    "ArraySource",
    "FileSource",
    "IterableSource",
    "Source",
    "StreamFit",
    "as_source",
    "fit_stream",
    "predict_stream",
]
