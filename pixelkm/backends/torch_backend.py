"""The pure-PyTorch reference backend: chunked matmul distances, argmin, scatter/index_add sums.

It runs wherever torch runs (CPU, CUDA, MPS) and is the oracle of every other backend. Its extra
memory is bounded: it never builds the full n x k distance matrix, only one (b, rows, k) block at a time.

On the CPU every chunk reuses the same few buffers (``out=`` everywhere: a fresh multi-megabyte tensor per chunk
costs page faults that took as long as the arithmetic), and a fit may hand in a ``cache`` dict in which the
augmented data of the first pass is kept for the next ones (see :class:`_Prepared`).
"""

from __future__ import annotations

import torch

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
        new.X, new.w, new.rows, new.whole = X, sample_weight, self.rows, self.whole
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
        # Distances are translation invariant: work around a point near the data (the centers' mean, or that of
        # the first pass's centers when the prepared data is reused) so that data far from the origin does not
        # lose its digits in ||x||^2 - 2 x.c + ||c||^2.
        c = centers - prep.shift
        # One matmul gives ||x - c||^2 = [x, ||x||^2, 1] . [-2c, 1, ||c||^2]
        c_aug = torch.cat([-2.0 * c, torch.ones_like(c[..., :1]), (c * c).sum(-1, keepdim=True)], -1)  # (b, k, d+2)
        c_aug = c_aug.transpose(1, 2).contiguous()  # (b, d+2, k): a transposed operand halves bmm's speed
        c_flat = c.reshape(b * k, d)
        c_cols = c_flat.t().contiguous()  # (d, b * k)
        labels = torch.empty(b, n, dtype=torch.int64, device=dev) if compute_labels else None
        min_sq = torch.empty(b, n, dtype=cdt, device=dev) if compute_labels and compute_distances else None
        upper = second = None
        if compute_second:
            upper, second = torch.empty(2, b, n, dtype=cdt, device=dev)
            # The expansion's rounding error is at most about (d + 2) eps (|x|^2 + 2|x||c| + |c|^2) <= (d + 2) eps
            # 2 (|x|^2 + max |c|^2), measured from the shift; the bounds move by twice that (and a little more for
            # their own rounding), so that they hold whatever the rounding did.
            slack = 4.0 * (d + 3) * torch.finfo(cdt).eps
            c_sq_max = (c * c).sum(-1).amax(1, keepdim=True)  # (b, 1)
            err = torch.empty(b, min(rows, n), dtype=cdt, device=dev)
            lin = torch.arange(min(rows, n), device=dev) * k  # where each row of a (1, r, k) block starts
            lin_buf = torch.empty_like(lin)
        r0 = min(rows, n)
        dist = torch.empty(b, r0, k, dtype=cdt, device=dev)
        lab_buf = torch.empty(b, r0, dtype=torch.int64, device=dev)
        diff = torch.empty(b * r0, d, dtype=cdt, device=dev) if min_sq is not None else None
        sq_buf = torch.empty(b * r0, dtype=cdt, device=dev) if min_sq is not None and b > 1 else None
        ones = torch.ones(d, 1, dtype=cdt, device=dev)
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
            if labels is not None and b > 1:
                labels[:, start:stop] = lab
            if second is not None:
                e = torch.add(xa[..., d], c_sq_max, out=err[:, :r]).mul_(slack)
                if b == 1:  # linear indices into the block: index_select/index_fill_ beat gather/scatter
                    at = torch.add(lin[:r], lab[0], out=lin_buf[:r])
                    nearest = D.view(-1).index_select(0, at).view(1, r)
                    D.view(-1).index_fill_(0, at, torch.inf)  # the nearest out of the way: the minimum is the second
                else:
                    nearest = D.gather(2, lab.unsqueeze(-1)).squeeze(-1)
                    D.scatter_(2, lab.unsqueeze(-1), torch.inf)
                torch.add(nearest, e, out=upper[:, start:stop])
                d2 = torch.amin(D.view(torch.int32), 2).view(cdt) if cdt == torch.float32 else torch.amin(D, 2)
                torch.sub(d2, e, out=second[:, start:stop]).clamp_(min=0.0)
            flat = (lab + offsets).reshape(-1) if b > 1 else lab.reshape(-1)
            if min_sq is not None:
                # The expansion above has an absolute error of about eps * ||x||^2: recompute the distance
                # to the chosen center directly, which costs d (not k) operations per point.
                out = min_sq[:, start:stop]
                if d <= _COLUMNWISE_D:  # one 1-D gather per feature beats gathering rows
                    acc_d = out.view(r) if b == 1 else sq_buf[: b * r]
                    for j in range(d):
                        g = torch.index_select(c_cols[j], 0, flat, out=diff[: b * r, j])
                        torch.sub(xa[..., j].reshape(b * r), g, out=g)
                        if j == 0:
                            torch.mul(g, g, out=acc_d)
                        else:
                            acc_d.addcmul_(g, g)
                    if b > 1:
                        out.copy_(acc_d.view(b, r))
                else:
                    g = torch.index_select(c_flat, 0, flat, out=diff[: b * r])
                    torch.sub(xa[..., :d].reshape(b * r, d), g, out=g)
                    if b == 1:
                        torch.mm(g.square_(), ones, out=out.view(r, 1))
                    else:
                        out.copy_((g.square_() @ ones).view(b, r))
            # Sums of the raw values in float64: exact for integer data such as uint8 pixels, so that they
            # do not depend on the chunk size or the order of accumulation.
            wc = None if sample_weight is None else sample_weight[:, start:stop].reshape(-1).to(acc)
            if cpu:
                sums_t.scatter_add_(2, lab.unsqueeze(0).expand(d, b, r), src)
                counts += torch.bincount(flat, weights=wc, minlength=b * k)
            else:
                sums.index_add_(0, flat, src.permute(1, 2, 0).reshape(b * r, d))
                counts.index_add_(0, flat, torch.ones_like(flat, dtype=acc) if wc is None else wc)
        sums = sums_t.permute(1, 2, 0) if cpu else sums.view(b, k, d)
        if compute_second:  # for the bounds pass strategy, which updates them point by point
            extras.min_sq_upper, extras.second_sq_lower = upper, second
            return AssignUpdateResult(labels, min_sq, sums, counts.view(b, k))
        return AssignUpdateResult(labels, min_sq, sums.to(cdt), counts.view(b, k).to(cdt))

    def _prepare(self, X, centers, sample_weight, rows, cache):
        """The prepared data of this pass: from ``cache`` when a previous pass of the fit left it there."""
        shift = centers.mean(1, keepdim=True)
        if cache is None:
            return _Prepared(X, shift, sample_weight, rows, whole=False)
        prep = cache.get(self.name)
        if prep is not None and prep.key == _Prepared.key_of(X, sample_weight) and prep.rows == rows:
            return prep
        nbytes = _Prepared.nbytes(X, centers.element_size())
        free = available_memory() if nbytes > 1 << 26 else None  # (small data: no need to ask)
        whole = nbytes <= (CACHE_BYTES if free is None else min(CACHE_BYTES, free // 4))
        prep = _Prepared(X, shift, sample_weight, rows, whole=whole)
        cache[self.name] = prep
        return prep
