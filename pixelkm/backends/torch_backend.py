"""The pure-PyTorch reference backend: chunked matmul distances, argmin, scatter/index_add sums.

It runs wherever torch runs (CPU, CUDA, MPS) and is the oracle of every other backend. Its extra
memory is bounded: it never builds the full n x k distance matrix, only one (b, rows, k) block at a time.

Its labels are the nearest centers of the direct differences ``sum((x - c)^2)`` whatever the magnitudes: the
matmul's block is checked against its rounding-error bound (see :mod:`pixelkm._distances`), which needs the
second-nearest center of every point (a second argmin over the block: on the CPU it costs about what the first
does), and the few points whose margin is below the bound are recomputed from direct differences once per pass.

On the CPU every chunk reuses the same few buffers (``out=`` everywhere: a fresh multi-megabyte tensor per chunk
costs page faults that took as long as the arithmetic), and a fit may hand in a ``cache`` dict in which the
augmented data of the first pass is kept for the next ones (see :class:`_Prepared`).
"""

from __future__ import annotations

import numpy as np
import torch

from .._distances import exact_nearest, expansion_error
from .._result import AssignUpdateResult, PassExtras
from .._sysinfo import available_memory
from .._validation import SUPPORTED_DTYPES
from ._base import Backend

#: bytes of one distance block on the CPU, and the most rows per chunk: every torch operation costs a parallel
#: region, so blocks larger than the cache are faster overall (`python benchmarks/cpu_pass_parts.py`, part 4:
#: 10-iteration fits 1.09x faster at K = 64 than with 2 MiB / 2^16 rows, the same at K = 8)
_CPU_BLOCK_BYTES = 8 << 20
ROW_CAP = 1 << 18
#: bytes of one distance block on an accelerator: large enough to keep it busy
_GPU_BLOCK_BYTES = 256 << 20
#: up to this many features the distance to the chosen center is gathered feature by feature
_COLUMNWISE_D = 8
#: the most bytes a fit's cache of prepared data may hold, and never more than a quarter of the free memory
#: (beyond it every pass prepares each chunk afresh)
CACHE_BYTES = 1 << 30


def default_chunk_rows(b: int, k: int, itemsize: int, device: torch.device, n: int) -> int:
    """Rows per chunk so that one (b, rows, k) distance block stays within the block budget."""
    budget = _CPU_BLOCK_BYTES if device.type == "cpu" else _GPU_BLOCK_BYTES
    rows = budget // max(1, b * k * itemsize)
    if device.type == "cpu":
        rows = min(max(rows, 1024), ROW_CAP)  # below ~1k rows per-chunk overhead dominates
    return int(max(1, min(n, rows)))


def _capturing(device: torch.device) -> bool:
    """Whether a CUDA graph is being captured on ``device`` (no host reads, no data-dependent shapes then)."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _where(mask: torch.Tensor) -> torch.Tensor | None:
    """(m, 2) indices of the True entries of a (b, r) mask; None while a CUDA graph is captured (no
    data-dependent shapes: the caller then treats every entry). On the CPU NumPy finds the few True entries
    some 200 times faster than torch.nonzero."""
    if mask.device.type == "cpu":
        flat = np.flatnonzero(mask.numpy())
        r = mask.shape[1]
        return torch.from_numpy(np.stack([flat // r, flat % r], 1))
    if _capturing(mask.device):
        return None
    return torch.nonzero(mask)


def _argmin(dist: torch.Tensor, dim: int, out: torch.Tensor) -> torch.Tensor:
    """First index of the minimum along ``dim`` into ``out``, as torch.argmin.

    For float32 the search runs on the int32 bit patterns, which order non-negative floats exactly as the
    floats do and which torch reduces 1.5 to 3 times faster on the CPU (measured on (rows, k) blocks, one
    thread). Squared distances are non-negative up to rounding; two tiny negative values (points on a
    center) may then tie the other way round.
    """
    if dist.dtype == torch.float32:
        dist = dist.view(torch.int32)
    return torch.argmin(dist, dim, out=out)


class _Prepared:
    """The data of one pass in the layouts the arithmetic wants, chunk by chunk.

    ``chunk(start, stop)`` gives ``(xa, src)`` for rows [start, stop): ``xa`` is (b, r, d + 2) in the compute
    dtype, [x - shift, ||x - shift||^2, 1], so that one matmul with [-2c, 1, ||c||^2] gives the squared
    distances; ``src`` is (d, b, r) float64, the raw values (times the weights), in the layout in which
    ``scatter_add_`` along the last dimension is fast on the CPU. Either the whole of X is prepared once
    (``whole=True``: the cache of a fit, reused by every pass) or each chunk is prepared into the same buffers
    when asked for.
    """

    def __init__(self, X, shift, sample_weight, rows, whole):
        b, n, d = X.shape
        self.X, self.shift, self.w, self.rows, self.whole = X, shift, sample_weight, rows, whole
        self.stale = False  # set when the centers left the shift far behind: the next pass prepares afresh
        self.key = self.key_of(X, sample_weight)
        m = n if whole else min(rows, n)
        self._xa = torch.empty(b, m, d + 2, dtype=shift.dtype, device=X.device)
        self._xa[..., d + 1] = 1.0
        self._src = torch.empty(d, b, m, dtype=torch.float64, device=X.device)
        self._sq = None if d <= _COLUMNWISE_D else torch.empty(b, min(rows, n), d, dtype=shift.dtype, device=X.device)
        if whole:
            for start in range(0, n, rows):
                stop = min(n, start + rows)
                self._fill(start, stop, self._xa[:, start:stop], self._src[..., start:stop])
            self._sq = None

    @staticmethod
    def key_of(X: torch.Tensor, sample_weight: torch.Tensor | None) -> tuple:
        w = None if sample_weight is None else (sample_weight.data_ptr(), sample_weight.stride())
        return (X.data_ptr(), tuple(X.shape), X.stride(), X.dtype, w)

    @staticmethod
    def nbytes(X: torch.Tensor, itemsize: int) -> int:
        """Bytes held when the whole of X is prepared."""
        b, n, d = X.shape
        return b * n * ((d + 2) * itemsize + d * 8)

    def _fill(self, start, stop, xa, src):
        d = self.X.shape[2]
        xc = xa[..., :d]
        torch.sub(self.X[:, start:stop], self.shift, out=xc)  # one chunk in the compute dtype, never the whole X
        if d <= _COLUMNWISE_D:  # |x|^2 column by column: a sum over a last dimension of 3 is a slow reduction
            col = xa[..., d]
            torch.mul(xc[..., 0], xc[..., 0], out=col)
            for j in range(1, d):
                col.addcmul_(xc[..., j], xc[..., j])
        else:
            sq = self._sq[:, : stop - start]
            torch.mul(xc, xc, out=sq)
            torch.sum(sq, -1, out=xa[..., d])
        src.copy_(self.X[:, start:stop].permute(2, 0, 1))  # raw values in float64: exact sums of integer data
        if self.w is not None:
            src.mul_(self.w[:, start:stop])

    def select(self, keep: torch.Tensor, X: torch.Tensor, sample_weight: torch.Tensor | None) -> _Prepared:
        """The prepared data of the problems ``keep`` only, now held in ``X`` (= the old X[keep]): the same
        numbers as before, the same shift, so that a problem's passes do not depend on its batch-mates."""
        new = object.__new__(_Prepared)
        new.X, new.w, new.rows, new.whole, new.stale = X, sample_weight, self.rows, self.whole, self.stale
        new.shift = self.shift[keep]
        new.key = self.key_of(X, sample_weight)
        new._xa, new._src = self._xa[keep], self._src[:, keep]
        new._sq = None if self._sq is None else self._sq[keep]
        return new

    def chunk(self, start, stop):
        if self.whole:
            return self._xa[:, start:stop], self._src[..., start:stop]
        xa, src = self._xa[:, : stop - start], self._src[..., : stop - start]
        self._fill(start, stop, xa, src)
        return xa, src


class TorchBackend(Backend):
    name = "torch"
    devices = ("cpu", "cuda", "mps", "xpu")
    dtypes = SUPPORTED_DTYPES
    tolerances = {
        torch.uint8: (1e-5, 1e-3),
        torch.float16: (1e-5, 1e-3),
        torch.bfloat16: (1e-5, 1e-3),
        torch.float32: (1e-5, 1e-4),
        torch.float64: (1e-12, 1e-10),
    }

    def chunk_rows(self, X: torch.Tensor, centers: torch.Tensor) -> int:
        b, k = centers.shape[:2]
        return default_chunk_rows(b, k, centers.element_size(), X.device, X.shape[1])

    def assign_update(
        self,
        X: torch.Tensor,
        centers: torch.Tensor,
        sample_weight: torch.Tensor | None,
        *,
        compute_labels: bool = True,
        compute_distances: bool | None = None,
        chunk_size: int | None = None,
        deterministic: bool | None = None,
        cache: dict | None = None,
        extras: PassExtras | None = None,
    ) -> AssignUpdateResult:
        """See :meth:`Backend.assign_update`. ``extras.bounds`` also gives, per point, ``extras.min_sq_upper`` and
        ``extras.second_sq_lower`` (see :class:`~pixelkm._result.PassExtras`); ``sums`` and ``counts`` then stay in
        their float64 accumulator. The bounds pass strategy of the engine needs these."""
        compute_second = extras is not None and extras.bounds
        # On the CPU every step is sequential or owned by one thread per output, so deterministic. On CUDA,
        # index_add_ adds in float64 with atomics: exact (so bit-identical) for integer data such as pixels, and
        # within float64 rounding otherwise; torch.use_deterministic_algorithms(True) makes it deterministic.
        if compute_distances is None:
            compute_distances = compute_labels
        b, n, d = X.shape
        k = centers.shape[1]
        cdt = centers.dtype
        acc = torch.float64
        dev = X.device
        cpu = dev.type == "cpu"
        rows = chunk_size or self.chunk_rows(X, centers)
        prep = self._prepare(X, centers, sample_weight, rows, cache if cpu else None)
        # Distances are translation invariant: work around a point near the data (the centers' median, or that of
        # the first pass's centers when the prepared data is reused) so that data far from the origin does not
        # lose its digits in ||x||^2 - 2 x.c + ||c||^2.
        c = centers - prep.shift
        # One matmul gives ||x - c||^2 = [x, ||x||^2, 1] . [-2c, 1, ||c||^2], within err * (||x||^2 + ||c||^2)
        # (pixelkm._distances). The ||c||^2 term is lowered by that bound: then a point's label is its exact nearest
        # center whenever the margin (second-nearest minus nearest) is at least 2 err (||x||^2 + ||c_label||^2);
        # the points below that margin (near-ties, outliers, centers far from the shift) are recomputed from direct
        # differences, so that labels are always the nearest centers of sum((x - c)^2).
        err = expansion_error(d, cdt)
        c_sq = (c * c).sum(-1)  # (b, k)
        c_aug = torch.cat([-2.0 * c, torch.ones_like(c[..., :1]), (c_sq * (1.0 - err)).unsqueeze(-1)], -1)
        c_aug = c_aug.transpose(1, 2).contiguous()  # (b, d+2, k): a transposed operand halves bmm's speed
        c_flat = centers.reshape(b * k, d)  # the distance to the chosen center: direct differences of the raw values
        c_cols = c_flat.t().contiguous()  # (d, b * k)
        c_sq_flat = c_sq.reshape(b * k).mul_(2.0 * err)
        lin = torch.arange(min(rows, n), device=dev) * k  # where each row of a (1, r, k) block starts
        lin_buf = torch.empty_like(lin)
        bound_buf = torch.empty(b * min(rows, n), dtype=cdt, device=dev)
        close_buf = torch.empty(b, min(rows, n), dtype=torch.bool, device=dev)
        thr_buf = torch.empty(b, min(rows, n), dtype=cdt, device=dev)
        lab2_buf = torch.empty(b, min(rows, n), dtype=torch.int64, device=dev)
        n_checked = 0
        flagged = []  # (problem, row, label) of the points whose margin was below the bound, chunk by chunk
        labels = torch.empty(b, n, dtype=torch.int64, device=dev) if compute_labels else None
        min_sq = torch.empty(b, n, dtype=cdt, device=dev) if compute_labels and compute_distances else None
        upper = second = None
        if compute_second:
            upper, second = torch.empty(2, b, n, dtype=cdt, device=dev)
        r0 = min(rows, n)
        dist = torch.empty(b, r0, k, dtype=cdt, device=dev)
        lab_buf = torch.empty(b, r0, dtype=torch.int64, device=dev)
        diff = torch.empty(b * r0, d, dtype=cdt, device=dev) if min_sq is not None else None
        sq_buf = torch.empty(b * r0, dtype=cdt, device=dev) if min_sq is not None and b > 1 else None
        offsets = (torch.arange(b, device=dev) * k).unsqueeze(1)
        if cpu:  # scatter along the last dimension of (d, b, r) sources: one thread owns each output
            sums_t = torch.zeros(d, b, k, dtype=acc, device=dev)
        else:  # index_add_ has a deterministic CUDA implementation and no host sync; scatter_add_ has neither
            sums = torch.zeros(b * k, d, dtype=acc, device=dev)
        counts = torch.zeros(b * k, dtype=acc, device=dev)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            r = stop - start
            xa, src = prep.chunk(start, stop)
            D = torch.bmm(xa, c_aug, out=dist[:, :r])  # distances (b, r, k), reduced over the centers
            lab = _argmin(D, 2, out=labels[:, start:stop] if b == 1 and labels is not None else lab_buf[:, :r])
            # the nearest and (with the nearest out of the way) the second-nearest of the block; a second argmin
            # and a gather beat amin over a short last dimension 3 times on the CPU
            if b == 1:  # linear indices into the block: index_select/index_fill_ beat gather/scatter
                at = torch.add(lin[:r], lab[0], out=lin_buf[:r])
                nearest = D.view(-1).index_select(0, at).view(1, r)
                D.view(-1).index_fill_(0, at, torch.inf)
                torch.add(lin[:r], _argmin(D, 2, out=lab2_buf[:, :r])[0], out=at)
                d2 = D.view(-1).index_select(0, at).view(1, r)
            else:
                nearest = D.gather(2, lab.unsqueeze(-1)).squeeze(-1)
                D.scatter_(2, lab.unsqueeze(-1), torch.inf)
                d2 = D.gather(2, _argmin(D, 2, out=lab2_buf[:, :r]).unsqueeze(-1)).squeeze(-1)
            # a label is sure when the margin d2 - nearest reaches 2 err (||x||^2 + ||c_label||^2)
            flat = (lab + offsets).reshape(-1) if b > 1 else lab.reshape(-1)
            bound = torch.index_select(c_sq_flat, 0, flat, out=bound_buf[: b * r]).view(b, r)
            bound.add_(xa[..., d], alpha=2.0 * err)
            close = torch.lt(d2, torch.add(bound, nearest, out=thr_buf[:, :r]), out=close_buf[:, :r])
            idx = _where(close) if k > 1 else close.new_empty(0, 2, dtype=torch.int64)
            if idx is None:  # while a CUDA graph is captured: every point recomputed now, then a select
                n_checked += r * b
                nearest, d2 = self._recompute(X, centers, start, lab, nearest, d2, close, idx)
                flat = (lab + offsets).reshape(-1) if b > 1 else lab.reshape(-1)
            elif idx.shape[0]:  # recomputed once for the whole pass, after it (a per-chunk call costs more)
                n_checked += idx.shape[0]
                flagged.append((idx[:, 0], idx[:, 1] + start, lab[idx[:, 0], idx[:, 1]]))
            if labels is not None and b > 1:
                labels[:, start:stop] = lab
            if second is not None:  # nearest + err (|x|^2 + 2 |c|^2) and second - err |x|^2: sound bounds
                xe = xa[..., d] * err
                up, lo = upper[:, start:stop], second[:, start:stop]
                torch.add(nearest, bound, out=up).sub_(xe)
                torch.sub(d2, xe, out=lo).clamp_(min=0.0)
                if idx is None:  # the recomputed points: their exact values, rounded outwards
                    eps = 2 * torch.finfo(cdt).eps
                    up.copy_(torch.where(close, nearest * (1 + eps), up))
                    lo.copy_(torch.where(close, d2 * (1 - eps), lo))
            if min_sq is not None:
                # The expansion above has an absolute error of about eps * ||x||^2: recompute the distance
                # to the chosen center directly (raw values, no shift), which costs d (not k) operations per point.
                xr = X[:, start:stop]
                out = min_sq[:, start:stop]
                if d <= _COLUMNWISE_D:  # one 1-D gather per feature beats gathering rows
                    acc_d = out.view(r) if b == 1 else sq_buf[: b * r]
                    for j in range(d):
                        g = torch.index_select(c_cols[j], 0, flat, out=diff[: b * r, j])
                        torch.sub(xr[..., j].reshape(b * r), g, out=g)
                        if j == 0:
                            torch.mul(g, g, out=acc_d)
                        else:
                            acc_d.addcmul_(g, g)
                    if b > 1:
                        out.copy_(acc_d.view(b, r))
                else:
                    g = torch.index_select(c_flat, 0, flat, out=diff[: b * r])
                    torch.sub(xr, g.view(b, r, d), out=g.view(b, r, d))
                    # a row-wise sum: its order depends on d only (a matmul with ones blocks by the row count,
                    # so the last bits followed the chunk size)
                    torch.sum(g.square_(), dim=1, out=out.view(r) if b == 1 else sq_buf[: b * r])
                    if b > 1:
                        out.copy_(sq_buf[: b * r].view(b, r))
            # Sums of the raw values in float64: exact for integer data such as uint8 pixels, so that they
            # do not depend on the chunk size or the order of accumulation.
            wc = None if sample_weight is None else sample_weight[:, start:stop].reshape(-1).to(acc)
            if cpu:
                sums_t.scatter_add_(2, lab.unsqueeze(0).expand(d, b, r), src)
                counts += torch.bincount(flat, weights=wc, minlength=b * k)
            else:
                sums.index_add_(0, flat, src.permute(1, 2, 0).reshape(b * r, d))
                counts.index_add_(0, flat, torch.ones_like(flat, dtype=acc) if wc is None else wc)
        if flagged:
            self._fix_flagged(
                X,
                centers,
                sample_weight,
                flagged,
                labels,
                min_sq,
                upper,
                second,
                counts,
                sums_t.view(d, b * k) if cpu else sums,
                cpu,
            )
        if prep.whole and n_checked * 16 > b * n:  # the shift is far from where the centers went: prepare afresh
            prep.stale = True
        sums = sums_t.permute(1, 2, 0) if cpu else sums.view(b, k, d)
        if compute_second:  # for the bounds pass strategy, which updates them point by point
            extras.min_sq_upper, extras.second_sq_lower = upper, second
            return AssignUpdateResult(labels, min_sq, sums, counts.view(b, k))
        return AssignUpdateResult(labels, min_sq, sums.to(cdt), counts.view(b, k).to(cdt))

    @staticmethod
    def _fix_flagged(X, centers, sample_weight, flagged, labels, min_sq, upper, second, counts, sums, cpu):
        """Labels from direct differences for the flagged points of a pass, and the pass's outputs mended where
        one changed: its value leaves the old cluster's sum and count for the new one's (``sums`` (d, b * k) on
        the CPU, (b * k, d) elsewhere), its distance and bounds become the exact ones (rounded outwards)."""
        pb, rows, old = (torch.cat(t).to(X.device) for t in zip(*flagged))
        new, near, sec = exact_nearest(X[pb, rows], centers, pb)
        cdt = centers.dtype
        k = centers.shape[1]
        if labels is not None:
            labels[pb, rows] = new
        if min_sq is not None:
            min_sq[pb, rows] = near.to(cdt)
        if upper is not None:
            eps = 2 * torch.finfo(cdt).eps
            upper[pb, rows] = (near * (1 + eps)).to(cdt)
            second[pb, rows] = (sec * (1 - eps)).to(cdt)
        moved = torch.nonzero(new != old).squeeze(1)
        if not moved.numel():
            return
        pm, rm = pb[moved], rows[moved]
        src, dst = pm * k + old[moved], pm * k + new[moved]
        w = torch.ones(moved.numel(), dtype=torch.float64, device=X.device)
        if sample_weight is not None:
            w = sample_weight[pm, rm].to(torch.float64)
        xw = X[pm, rm].to(torch.float64) * w.unsqueeze(1)  # (m, d): what the pass added, in the same float64
        counts.index_add_(0, src, w, alpha=-1).index_add_(0, dst, w)
        if cpu:  # (d, b * k)
            sums.index_add_(1, src, xw.t(), alpha=-1).index_add_(1, dst, xw.t())
        else:
            sums.index_add_(0, src, xw, alpha=-1).index_add_(0, dst, xw)

    @staticmethod
    def _recompute(X, centers, start, lab, nearest, d2, close, idx):
        """Labels from direct differences for the points ``close`` to a tie (``idx``: their (problem, row) indices
        in the chunk, or None for every point of the chunk), written into ``lab``. Returns the block's nearest and
        second-nearest values with those points' exact ones (rounded to the compute dtype: the slack the caller's
        bounds add covers that rounding)."""
        b, r = lab.shape
        if idx is None:  # while a CUDA graph is captured: no data-dependent shapes, every point, then a select
            grid = torch.meshgrid(torch.arange(b, device=X.device), torch.arange(r, device=X.device), indexing="ij")
            idx = torch.stack(grid, -1).reshape(-1, 2)
            keep = close.reshape(-1)
        else:
            keep = None
        pb, pr = idx[:, 0], idx[:, 1]
        new, near, sec = exact_nearest(X[pb, start + pr], centers, pb)
        near, sec = near.to(nearest.dtype), sec.to(nearest.dtype)
        nearest, d2 = nearest.clone(), d2.clone()
        if keep is not None:
            new = torch.where(keep, new, lab[pb, pr])
            near = torch.where(keep, near, nearest[pb, pr])
            sec = torch.where(keep, sec, d2[pb, pr])
        lab[pb, pr] = new
        nearest[pb, pr] = near
        d2[pb, pr] = sec
        return nearest, d2

    def _prepare(self, X, centers, sample_weight, rows, cache):
        """The prepared data of this pass: from ``cache`` when a previous pass of the fit left it there."""
        shift = centers.median(1, keepdim=True).values  # robust to outlying centers (the mean is not)
        if cache is None:
            return _Prepared(X, shift, sample_weight, rows, whole=False)
        prep = cache.get(self.name)
        if prep is not None and prep.key == _Prepared.key_of(X, sample_weight) and prep.rows == rows and not prep.stale:
            return prep
        nbytes = _Prepared.nbytes(X, centers.element_size())
        free = available_memory() if nbytes > 1 << 26 else None  # (small data: no need to ask)
        whole = nbytes <= (CACHE_BYTES if free is None else min(CACHE_BYTES, free // 4))
        prep = _Prepared(X, shift, sample_weight, rows, whole=whole)
        cache[self.name] = prep
        return prep
