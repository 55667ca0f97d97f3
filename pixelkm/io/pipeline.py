"""Data read in chunks, and the pipeline that brings the chunks to the device.

A *source* yields row chunks of shape (r, d): a NumPy array or memmap, a ``.npy`` file, an image file (read in
strips, see :mod:`pixelkm.io.strips`), a list of chunks, or a callable returning an iterable of chunks (called
once per pass); :class:`StreamWeights` reads one weight per row alongside. Chunks flow to the device through two
pinned host buffers and two device buffers: the copy of chunk j + 1 (on its own CUDA stream) overlaps the compute
on chunk j, and a reader thread overlaps disk reads with both. :class:`ChunkReader` is one job's view of all this:
(chunk, weights) pairs per pass, counted, with a progress bar.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from .._validation import as_tensor, check_largest, check_magnitude, is_sparse, largest_magnitude
from .progress import Progress
from .strips import image_layout, read_strips, readinto_exact

NP_TO_TORCH = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}
#: rows per chunk on the CPU when no memory cap is given
CPU_ROWS = 1 << 21
#: rows per chunk of the CPU histogram pass (its per-chunk cost is a bincount, larger chunks amortize it)
HIST_ROWS = 1 << 23
#: device memory used per chunk on an accelerator when no cap is given
_GPU_CHUNK_BYTES = 1 << 30


class Source:
    """Row chunks of shape (r, d), re-readable once per pass unless ``reiterable`` is False."""

    n_features: int
    dtype: np.dtype
    n_samples: int | None = None  # None until a first pass has counted them
    shape: tuple[int, ...] | None = None  # the array/image shape, for outputs of the same shape
    image_shape: tuple[int, int] | None = None  # (H, W) of an image source (gray ones too), else None
    reiterable: bool = True

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def files(self) -> list[str]:
        """The files this source reads (outputs never replace them)."""
        return []


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
        self.image_shape = self.shape[:2] if X.ndim == 3 else None
        self.X = X.reshape(-1, X.shape[-1] if X.ndim == 3 else (1 if X.ndim == 1 else X.shape[1]))
        self.n_samples, self.n_features = self.X.shape
        self.dtype = _check_dtype(self.X.dtype)
        self._file = _memmap_position(X)
        self._mapped = _mapped_files(X)

    def files(self) -> list[str]:
        """The file behind a memmap, also when X is a view of one (a slice, ``np.asarray(mm)``)."""
        return self._mapped

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


def _mapped_files(X: np.ndarray) -> list[str]:
    """The files of the memmaps that X is, or is a view of (its chain of ``.base`` arrays)."""
    files, a = [], X
    while isinstance(a, np.ndarray):
        name = getattr(a, "filename", None)
        if isinstance(a, np.memmap) and name:
            files.append(os.fspath(name))
        a = a.base
    return files


def _file_rows(path: str, offset: int, n: int, d: int, dtype: np.dtype, rows: int) -> Iterator[np.ndarray]:
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        for s in range(0, n, rows):
            out = np.empty((min(rows, n - s), d), dtype=dtype)
            readinto_exact(f, out)
            yield out


class FileSource(Source):
    """A ``.npy`` file or an image file; pixels become rows of shape (H * W, C), read strip by strip."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.layout = image_layout(self.path)
        self.shape = self.layout.shape
        if len(self.shape) > 3:
            raise ValueError(
                f"{self.path}: a stream reads (n,), (n, d) or an image (H, W, C); this file holds shape {self.shape}"
            )
        self.dtype = _check_dtype(self.layout.dtype)
        if self.path.endswith(".npy") and len(self.shape) == 2:  # (n, d) data, not an (H, W) gray image
            self.n_samples, self.n_features = self.shape
            self._row_elems = 1
        else:  # an image, (H, W) gray or (H, W, C)
            self.n_features = self.shape[2] if len(self.shape) == 3 else 1
            self.n_samples = self.shape[0] * self.shape[1]
            self._row_elems = self.shape[1]
            self.image_shape = tuple(self.shape[:2])

    def files(self) -> list[str]:
        return [self.path]

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
        if self.n_samples is not None and n != self.n_samples:  # a callable must give the same data every pass
            raise ValueError(
                f"the chunk source gave {n} rows in this pass and {self.n_samples} in the one before: a callable must "
                "return the same chunks on every call"
            )
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
    if dtype not in NP_TO_TORCH:
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
        if weights.dtype not in NP_TO_TORCH:  # integers: converted once (a memmap of them is read whole)
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


def prefetch(it: Iterator[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
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
        except BaseException as e:  # noqa: BLE001 (re-raised in the consumer: SystemExit and KeyboardInterrupt too,
            q.put(e)  # or the consumer would wait for a chunk that never comes)

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
        t = NP_TO_TORCH[c.dtype]
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
            return CPU_ROWS, None
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


class ChunkReader:
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
        self.progress = Progress(progress, source.n_samples)
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
        for x in device_chunks(prefetch(self.source.chunks(rows)), self.device, rows):
            if check and x.numel():  # NaN, inf or out-of-range values: the same error as KMeans.fit, every pass
                if x.device.type == "cpu":
                    check_magnitude(x, "X")
                else:
                    amax = largest_magnitude(x)
                    largest = amax if largest is None else torch.maximum(largest, amax)
            yield x
            self.progress.update(x.shape[0])
        if largest is not None:
            check_largest(float(largest), self.source.n_features, x.dtype, "X")
