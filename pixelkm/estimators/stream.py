"""Out-of-core k-means: fit data that fits neither in device memory nor in RAM, one chunk at a time.

The data comes from a source of row chunks (:mod:`pixelkm.io.pipeline`: arrays, memmaps, ``.npy`` and image
files, lists or callables of chunks), brought to the device through pinned double buffers. The fit is the
engine's Lloyd loop over a :class:`~pixelkm.engine.sources.StreamSource`: each iteration is one pass, sums and
counts accumulated in float64; empty clusters take the farthest points, found in the same pass (the k farthest
candidates are kept per chunk, ties to the lowest row, as the in-memory fit does). For uint8 data of up to 3
features (RGB pixels) the fit is instead exact on the data's color histogram: one pass counts the colors, the fit
runs in memory on the distinct colors weighted by their counts, and a lookup table gives every pixel its label in
the output pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validation import as_tensor, check_data, compute_dtype, resolve_generator, warn_fewer_clusters
from ..engine import init as _init
from ..engine.batched import fit_batched
from ..engine.comm import LOCAL, LocalComm
from ..engine.histogram import color_histogram, histogram_keys, pack_keys, rescaled_tol, unpack_keys, weighted_variance
from ..engine.init_scalable import Moments, default_coreset_size, lightweight_coreset, resolve_init
from ..engine.lloyd import lloyd
from ..engine.sources import StreamSource
from ..io.files import refuse_inputs
from ..io.pipeline import (
    CPU_ROWS,
    HIST_ROWS,
    NP_TO_TORCH,
    ArraySource,
    ChunkReader,
    FileSource,
    IterableSource,
    Source,
    StreamWeights,
    as_source,
    plan_rows,
)
from ..io.strips import NpyWriter
from ..ops import run_assign_update
from .base import fit_params


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


def _histogram_pass(run: ChunkReader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Distinct rows (m, d) uint8, their counts (m,) float64 and their summed weights (m,) float64 (None without
    weights) of uint8 data with d <= 3, in one pass."""
    d = run.source.n_features
    table = torch.zeros(1 << (8 * d), dtype=torch.int64, device=run.device)
    wtable = None if run.weights is None else torch.zeros(table.numel(), dtype=torch.float64, device=run.device)
    rows = max(run.rows, HIST_ROWS) if run.device.type == "cpu" and run.rows == CPU_ROWS else None
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
    return stream_fit(**locals())  # the same parameters, by name


def stream_fit(
    data: Any,
    n_clusters: int,
    *,
    sample_weight: Any,
    init: Any,
    max_iter: int,
    tol: float,
    random_state: Any,
    reduce: bool | str,
    coreset_size: int | None,
    backend: str,
    device: str | torch.device | None,
    max_device_memory: int | None,
    chunk_rows: int | None,
    progress: bool,
    verbose: bool,
    comm: LocalComm = LOCAL,
) -> StreamFit:
    """:func:`fit_stream`; with a distributed ``comm``, ``data`` is this process's shard and every process ends
    with the centers of one streamed fit over all the shards (in rank order) from the same initial centers."""
    t0 = time.perf_counter()
    p = fit_params(
        {
            "n_clusters": n_clusters,
            "init": init,
            "max_iter": max_iter,
            "tol": tol,
            "random_state": random_state,
            "reduce": reduce,
            "coreset_size": coreset_size,
            "backend": backend,
            "device": device,
            "max_device_memory": max_device_memory,
            "chunk_rows": chunk_rows,
            "progress": progress,
            "verbose": verbose,
        },
        None,
    )
    k, max_iter, tol, reduce, verbose = p["n_clusters"], p["max_iter"], p["tol"], p["reduce"], bool(p["verbose"])
    source = as_source(data)
    dev, rows, block = _plan(source, k, p["device"], p["max_device_memory"], p["chunk_rows"])
    progress, coreset_size = p["progress"], p["coreset_size"]
    cdt = compute_dtype(NP_TO_TORCH[source.dtype])
    weights = None if sample_weight is None else StreamWeights(sample_weight, source.n_samples)
    run = ChunkReader(source, dev, rows, block, progress, weights, cdt)
    gen = resolve_generator(p["random_state"])
    hist_ok = source.dtype == np.uint8 and source.n_features <= 3
    if reduce is True and not comm.is_local:
        raise ValueError("reduce=True (the histogram fit) runs in one process; pass reduce=False or 'auto'")
    use_hist = reduce is True or (reduce == "auto" and hist_ok and comm.is_local)
    if use_hist and not hist_ok:
        raise ValueError("reduce=True needs uint8 data of at most 3 features")
    try:
        if use_hist:
            fit = _histogram_fit(run, k, init, max_iter, tol, gen, backend, verbose, t0, reduce)
            if fit is not None:
                return fit
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
            moments = moments.reduced(comm)
        n_total = _total_rows(source.n_samples, comm, dev)
        if n_total is not None and k > n_total:
            raise ValueError(f"n_clusters={k} must be <= n_samples={n_total}")
        if isinstance(init, str):
            m = coreset_size or default_coreset_size(k)
            local_gen = (
                gen if comm.is_local else torch.Generator().manual_seed((gen.initial_seed() + 1 + comm.rank) % 2**64)
            )
            pts, w = lightweight_coreset(lambda: run.pairs("coreset"), m, local_gen, cdt, moments)
            if not comm.is_local:
                pts, w = _gathered(pts.to(dev), w.to(dev), comm)
            centers = resolve_init(init, pts, w, k, gen, cdt)
        else:
            shape_only = torch.empty((1, 1, source.n_features), dtype=cdt)
            centers = _init.explicit_init(init, shape_only, k, cdt)[0]
        centers = centers.to(dev).contiguous()
        comm.broadcast_(centers)
        abs_tol = float(moments.variance()) * tol if tol > 0 else 0.0
        stream = StreamSource(run, backend=backend, comm=comm)
        res = lloyd(
            stream,
            centers.unsqueeze(0),
            max_iter=max_iter,
            tol=torch.full((1,), abs_tol, dtype=torch.float64, device=dev),
            verbose=verbose,
        )
        n_total = _total_rows(source.n_samples, comm, dev)
        if k > n_total:
            raise ValueError(f"n_clusters={k} must be <= n_samples={n_total}")
        warn_fewer_clusters((stream.final_counts > 0).unsqueeze(0), k)
        return StreamFit(
            res.centers[0].cpu().numpy(),
            float(res.inertia[0]),
            int(res.n_iter[0]),
            run.passes,
            None,
            time.perf_counter() - t0,
        )
    finally:
        run.progress.close()


def _plan(source, k: int, device, max_device_memory, chunk_rows) -> tuple[torch.device, int, int | None]:
    """(device, rows per streamed chunk, rows per assign_update block) of a streamed job."""
    dev = device if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows, block = plan_rows(source.n_features, source.dtype.itemsize, k, dev, max_device_memory)
    if chunk_rows is not None:
        rows = chunk_rows
        block = None if block is None else min(block, rows)
    return dev, rows, block


def _total_rows(n: int | None, comm: LocalComm, device: torch.device) -> int | None:
    """The rows of every process (None while a source has not counted its own)."""
    if comm.is_local or n is None:
        return n
    t = torch.tensor([n], dtype=torch.int64, device=device)
    comm.sum_(t)
    return int(t)


def _gathered(pts: torch.Tensor, w: torch.Tensor, comm: LocalComm) -> tuple[torch.Tensor, torch.Tensor]:
    """The coreset points and weights of every process, in rank order."""
    sizes = [int(t) for t in comm.all_gather(torch.tensor([pts.shape[0]], device=pts.device))]
    m = max(sizes)
    pad_p = torch.cat([pts, pts.new_zeros(m - pts.shape[0], pts.shape[1])])
    pad_w = torch.cat([w, w.new_zeros(m - w.shape[0])])
    all_p, all_w = comm.all_gather(pad_p), comm.all_gather(pad_w)
    return torch.cat([p[:s] for p, s in zip(all_p, sizes)]), torch.cat([q[:s] for q, s in zip(all_w, sizes)])


def _histogram_fit(run, k, init, max_iter, tol, gen, backend, verbose, t0, reduce) -> StreamFit | None:
    """The exact fit of uint8 data of up to 3 features on its color histogram (one counting pass). None when the
    data has fewer distinct rows than clusters but enough rows: the streamed Lloyd passes then fit (and warn), as a
    fit in memory does."""
    cdt = run.weight_dtype
    colors, counts, wsums = _histogram_pass(run)
    if colors.shape[0] < k:
        if reduce is True or not run.source.reiterable or k > int(counts.sum()):
            raise ValueError(f"n_clusters={k} is more than the {colors.shape[0]} distinct rows of the data")
        return None
    if verbose:
        print(f"Histogram: {int(counts.sum())} rows, {colors.shape[0]} distinct")
    tol_h = rescaled_tol(tol, colors, weighted_variance(colors, counts))  # unweighted, as in memory
    fit_w = (counts if wsums is None else wsums).to(cdt)
    init_c = init
    if not isinstance(init, str) or init == "k-means||":  # fit_batched takes k-means|| as explicit centers
        init_c = resolve_init(init, colors, fit_w, k, gen, cdt).unsqueeze(0)
    res = fit_batched(
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
        res.centers[0].cpu().numpy(),
        float(res.inertia[0]),
        int(res.n_iter[0]),
        run.passes,
        colors.shape[0],
        time.perf_counter() - t0,
    )


def _source_files(source: Any) -> list[str]:
    """The files a source reads (a path, or the file behind a memmap or a view of one): outputs never replace
    them."""
    return list(source.files())


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
    p = fit_params(
        {
            "quantize": quantize,
            "backend": backend,
            "device": device,
            "max_device_memory": max_device_memory,
            "chunk_rows": chunk_rows,
            "progress": progress,
            "force": force,
        },
        None,
    )
    quantize, backend, progress, force = p["quantize"], p["backend"], p["progress"], p["force"]
    source = as_source(data)
    if isinstance(out, (str, os.PathLike)):  # before any work
        if not os.fspath(out).lower().endswith(".npy"):
            raise ValueError(
                f"predict_stream writes .npy files, got {os.fspath(out)!r}; name it .npy (an image of the quantized "
                "pixels: pixelkm.image.quantize or the pixelkm command)"
            )
        refuse_inputs(out, _source_files(source))
        if os.path.lexists(out) and not force:
            raise FileExistsError(f"{out} exists; pass force=True to overwrite it")
    elif isinstance(out, np.ndarray) and not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be a writeable C-contiguous array (a strided view would be written to a copy)")
    C, _ = as_tensor(centers, "centers")
    check_data(C, "centers", ndims=(2,))
    if C.shape[0] < 1:
        raise ValueError(f"centers must have shape (n_clusters, n_features), got {tuple(C.shape)}")
    k, d = C.shape
    if d != source.n_features:
        raise ValueError(f"centers have {d} features, the data {source.n_features}")
    dev, rows, block = _plan(source, k, p["device"], p["max_device_memory"], p["chunk_rows"])
    cdt = compute_dtype(NP_TO_TORCH[source.dtype])
    C = C.to(device=dev, dtype=cdt)
    run = ChunkReader(source, dev, rows, block, progress)
    lab_dtype = np.uint8 if k <= 256 else (np.uint16 if k <= 65536 else np.int64)
    palette = C.round().clamp(0, 255).to(torch.uint8) if source.dtype == np.uint8 else C
    lut = lut_inertia = None
    by_color = source.dtype == np.uint8 and d <= 3
    if by_color and _use_lut(source.n_samples, d):  # label every possible color once: a lookup per row
        every = unpack_keys(torch.arange(1 << (8 * d), device=dev, dtype=torch.int32), d)
        r = run_assign_update(every.unsqueeze(0), C.unsqueeze(0), None, backend=backend, chunk_size=block)
        # what each color becomes (its palette color, or its label in the output dtype) and its squared distance
        lut = palette[r.labels[0]] if quantize else r.labels[0].to(NP_TO_TORCH.get(np.dtype(lab_dtype), torch.int64))
        lut_inertia = r.min_sq_dist[0]
        del every, r
    collected, written = [], [0]
    writer = None
    if isinstance(out, (str, os.PathLike)):
        if source.n_samples is None:
            raise ValueError("writing a .npy needs the number of rows: pass an array, a .npy or an image file")
        rows_shape = tuple(source.image_shape) if source.image_shape is not None else (source.n_samples,)
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
            rows = out.reshape(-1, *block_out.shape[1:])  # a view: out is C-contiguous
            if s + block_out.shape[0] > rows.shape[0]:
                raise ValueError(f"out holds {rows.shape[0]} rows of {block_out.shape[1:]}, the source has more")
            rows[s : s + block_out.shape[0]] = block_out
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
            _, _, inertia_t, _ = StreamSource(run, backend=backend).pass_(C, "labels", labels_out=emit)
            inertia = float(inertia_t)
        per_row = d if quantize else 1
        if isinstance(out, np.ndarray) and out.size != written[0] * per_row:  # every row of out written, no more
            raise ValueError(f"out holds {out.size / per_row:g} rows, the source {written[0]}")
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    finally:
        run.progress.close()
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
