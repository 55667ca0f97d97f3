"""Exact histogram reduction of uint8 data: fit on (distinct row, count) instead of every row.

A uint8 image has at most 2^24 distinct RGB colors and a photo far fewer. Lloyd's iterates on the pixels and on
the distinct colors weighted by their counts are the same (the sums and counts of every cluster are equal), so a
fit on the histogram gives the pixel-level centers at a fraction of the cost; every pixel's label comes back
through the inverse index. Everything runs on the data's device.

Rows of up to 4 uint8 features are packed into one integer key; keys are counted either with a dense
``bincount`` over all 2^(8 d) possible keys (when that table is small against n) or with ``torch.unique``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

try:  # the dense histogram's passes (numba, as the CPU backend and k-means++, which import it too)
    from numba import prange
except ImportError:  # pragma: no cover
    prange = range

#: below this many rows the reduction never pays (its fixed costs dominate)
MIN_ROWS = 4096
#: the reduction is used only when distinct rows are at most this fraction of the rows
MAX_DISTINCT_FRACTION = 0.5
#: largest dense key table (entries) for the bincount path
_DENSE_KEYS = 1 << 24


@dataclass(frozen=True, eq=False)
class ColorHistogram:
    """Distinct rows of X and what a weighted fit on them needs.

    colors : uint8 tensor of shape (m, d), the distinct rows in increasing key order
    weights : tensor of shape (m,) in the compute dtype: per distinct row, its count (or its summed sample weight)
    inverse : int64 tensor of shape (n,): ``colors[inverse]`` equals X
    counts : float64 tensor of shape (m,): how many rows of X each distinct row stands for
    variance : float64 tensor of shape (): mean over features of each feature's variance over the rows of X
        (unweighted, as scikit-learn's ``tol`` uses it), computed from the histogram on first use (two passes over
        the distinct colors: 0.04 s for a 12 MP photo's, which the image toolkit does not need)
    """

    colors: torch.Tensor
    weights: torch.Tensor
    inverse: torch.Tensor | None
    counts: torch.Tensor

    @cached_property
    def variance(self) -> torch.Tensor:
        return weighted_variance(self.colors, self.counts)

    def rescaled_tol(self, tol: float) -> float:
        """The ``tol`` that, given to a fit on ``colors`` (which measures the unweighted variance of the distinct
        rows), gives the absolute tolerance ``tol * variance`` of the fit on every row."""
        return rescaled_tol(tol, self.colors, self.variance)


def pack_keys(X: torch.Tensor) -> torch.Tensor:
    """One integer key per row of uint8 X (n, d), d <= 4: int32 for d <= 3, int64 for d = 4 (big-endian order)."""
    d = X.shape[1]
    if X.dtype != torch.uint8 or not 1 <= d <= 4:
        raise ValueError(f"pack_keys needs uint8 rows of 1 to 4 features, got {X.dtype} of shape {tuple(X.shape)}")
    key = X[:, 0].to(torch.int64 if d == 4 else torch.int32)
    for j in range(1, d):
        key.mul_(256).add_(X[:, j])  # in place: one key tensor, no temporaries of size n per feature
    return key


def unpack_keys(keys: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of :func:`pack_keys`: uint8 rows of shape (m, d)."""
    shifts = torch.arange(8 * (d - 1), -1, -8, device=keys.device, dtype=keys.dtype)
    return ((keys.unsqueeze(1) >> shifts) & 255).to(torch.uint8)


def _use_dense(n: int, d: int) -> bool:
    # The dense table costs ~2^(8d) operations, the sort ~n log n: bincount when the table is not much larger
    # than the data (measured on 2 CPU cores: at 393k rows unique is 5x faster, at 12M bincount 2x faster).
    return 8 * d <= 24 and (1 << (8 * d)) <= 4 * n


_KERNELS: dict[str, object] = {}


def _count_rows(X, table):
    """table[key(row)] += 1 for every row of uint8 X (n, d), the key as :func:`pack_keys` makes it; returns the
    number of distinct keys."""
    d = X.shape[1]
    m = 0
    for i in range(X.shape[0]):
        key = 0
        for j in range(d):
            key = key * 256 + X[i, j]
        c = table[key]
        if c == 0:
            m += 1
        table[key] = c + 1
    return m


def _compact_table(table, keys, counts, index):
    """keys (m,) and counts (m,) of the non-zero entries of ``table``, in key order; with ``index`` the entries
    become their position (the look-up table of the inverse index)."""
    j = 0
    for key in range(table.shape[0]):
        c = table[key]
        if c != 0:
            keys[j] = key
            counts[j] = c
            if index:
                table[key] = j
            j += 1


#: rows per block of the parallel look-up (every output independent: any split gives the same result)
_LOOKUP_BLOCK = 1 << 16


def _lookup_rows(X, lut, out):
    """out[i] = lut[key(row i)] for every row of uint8 X (n, d), blocks of rows in parallel (a random gather
    into a table of up to 64 MB, bound by its cache misses)."""
    d = X.shape[1]
    n = X.shape[0]
    nb = (n + _LOOKUP_BLOCK - 1) // _LOOKUP_BLOCK
    for b in prange(nb):
        for i in range(b * _LOOKUP_BLOCK, min(n, (b + 1) * _LOOKUP_BLOCK)):
            key = 0
            for j in range(d):
                key = key * 256 + X[i, j]
            out[i] = lut[key]


def _kernels():
    """The compiled dense-histogram passes (numba, cached on disk), or None where numba does not import."""
    if "count" not in _KERNELS:
        try:
            import numba
        except ImportError:  # pragma: no cover
            _KERNELS["count"] = _KERNELS["lookup"] = _KERNELS["compact"] = None
            return None
        try:
            _KERNELS["count"] = numba.njit(cache=True)(_count_rows)
            _KERNELS["lookup"] = numba.njit(cache=True, parallel=True)(_lookup_rows)
            _KERNELS["compact"] = numba.njit(cache=True)(_compact_table)
        except RuntimeError as err:  # no writable cache folder: compiled once per process instead
            if "no locator available" not in str(err):
                raise
            _KERNELS["count"] = numba.njit(_count_rows)
            _KERNELS["lookup"] = numba.njit(parallel=True)(_lookup_rows)
            _KERNELS["compact"] = numba.njit(_compact_table)
    return _KERNELS["count"], _KERNELS["lookup"], _KERNELS["compact"]


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


def map_rows(X: torch.Tensor, colors: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values[j]`` for every row of uint8 X (n, d) equal to ``colors[j]`` (the distinct rows of X, from its
    histogram): shape (n,), values' dtype, on X's device.

    One gather through a table of 2^(8 d) entries indexed by the packed row (d <= 3: a numba pass over the rows
    on the CPU, no key tensor); d = 4 through the sorted keys. Rows that are not among ``colors`` get an
    unspecified value.
    """
    d = X.shape[1]
    values = values.to(X.device)
    if d <= 3 and X.shape[0] >= (1 << (8 * d)) // 64:
        kernels = _kernels() if X.device.type == "cpu" and values.dtype not in (torch.bool, torch.bfloat16) else None
        small = values.dtype == torch.int64 and (values.numel() == 0 or int(values.abs().max()) < 2**31)
        tdt = torch.int32 if small else values.dtype
        if kernels is not None:
            # NumPy's arrays (which it backs with huge pages): the first touch of a fresh 96 MB int64 output costs
            # 0.04 s in 4 KB page faults for a 12 MP photo through torch.empty, 0.02 s through np.empty
            table = torch.from_numpy(np.zeros(1 << (8 * d), dtype=_numpy_dtype(tdt)))
            table[pack_keys(colors).long()] = values.to(tdt)
            out = np.empty(X.shape[0], dtype=_numpy_dtype(values.dtype))
            kernels[1](X.contiguous().numpy(), table.numpy(), out)
            return torch.from_numpy(out)
        table = torch.zeros(1 << (8 * d), dtype=tdt, device=X.device)
        table[pack_keys(colors).long()] = values.to(tdt)
        return table[pack_keys(X).long()].to(values.dtype)
    # few rows (or 4 features): a binary search among the sorted keys of the colors
    keys, ckeys = pack_keys(X), pack_keys(colors)
    return values[torch.searchsorted(ckeys, keys).clamp_(max=max(0, ckeys.numel() - 1))]


def dense_histogram(X: torch.Tensor, *, inverse: bool = True):
    """The histogram of uint8 rows X (n, d), d <= 3, on the CPU, by sequential passes (a count table of 2^(8 d)
    int32 entries, its compaction, then each row's index through it when asked): the result of
    :func:`histogram_keys` on :func:`pack_keys` (X) without the key tensor. None where numba does not import.

    Returns ``(unique_keys int32, counts float64, inverse int64 or None)``.
    """
    kernels = _kernels()
    if kernels is None:
        return None
    count, lookup, compact = kernels
    d = X.shape[1]
    x = X.contiguous().numpy()
    table = np.zeros(1 << (8 * d), dtype=np.int32)
    m = count(x, table)
    keys = np.empty(m, dtype=np.int32)
    counts = np.empty(m, dtype=np.float64)
    compact(table, keys, counts, inverse)
    inv = None
    if inverse:
        out = np.empty(x.shape[0], dtype=np.int64)
        lookup(x, table, out)
        inv = torch.from_numpy(out)
    return torch.from_numpy(keys), torch.from_numpy(counts), inv


def histogram_keys(keys: torch.Tensor, d: int, weights: torch.Tensor | None = None, *, inverse: bool = True):
    """Distinct keys with counts (and summed weights, and the inverse index when asked).

    Returns ``(unique_keys, counts float64, weight_sums or None, inverse or None)``.
    """
    n = keys.numel()
    if _use_dense(n, d):
        table = torch.bincount(keys, minlength=1 << (8 * d))
        present = torch.nonzero(table).squeeze(1)
        counts = table[present].double()
        wsum = (
            None
            if weights is None
            else torch.bincount(keys, weights=weights.double(), minlength=table.numel())[present]
        )
        inv = None
        if inverse:
            lut = torch.empty(table.numel(), dtype=torch.int64, device=keys.device)
            lut[present] = torch.arange(present.numel(), device=keys.device)
            inv = lut[keys.long()]
        return present.to(keys.dtype), counts, wsum, inv
    uniq, inv, cnt = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    wsum = None
    if weights is not None:
        wsum = torch.zeros(uniq.numel(), dtype=torch.float64, device=keys.device).index_add_(0, inv, weights.double())
    return uniq, cnt.double(), wsum, (inv if inverse else None)


def weighted_variance(colors: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean over features of the variance of the rows that ``colors`` (m, d) with ``counts`` (m,) stand for."""
    x = colors.double()
    c = counts.double().unsqueeze(1)
    total = c.sum()
    mean = (x * c).sum(0) / total
    return (((x - mean) ** 2) * c).sum(0).div(total).mean()


def rescaled_tol(tol: float, colors: torch.Tensor, row_variance: torch.Tensor) -> float:
    """See :meth:`ColorHistogram.rescaled_tol`; ``row_variance`` is :func:`weighted_variance` with the counts."""
    if tol <= 0:
        return float(tol)
    var_rows = float(row_variance)
    var_colors = float(weighted_variance(colors, colors.new_ones(colors.shape[0], dtype=torch.float64)))
    return float(tol) * var_rows / var_colors if var_colors > 0 else float(tol)


def color_histogram(
    X: torch.Tensor, sample_weight: torch.Tensor | None = None, *, inverse: bool = True
) -> ColorHistogram:
    """The exact histogram of uint8 X of shape (n, d), d <= 4, on X's device (always computed).

    ``inverse=False`` may leave ``inverse`` None (it is then :func:`map_rows` of X with ``arange(m)``, when
    needed) where that saves a pass: on the CPU for d <= 3 without sample weights."""
    d = X.shape[1]
    dense = None
    if X.device.type == "cpu" and X.dtype == torch.uint8 and d <= 3 and X.shape[0] > 0 and _use_dense(X.shape[0], d):
        dense = dense_histogram(X, inverse=inverse or sample_weight is not None)
    if dense is not None:
        uniq, counts, inv = dense
        wsum = None
        if sample_weight is not None:
            wsum = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inv, sample_weight.double())
    else:
        uniq, counts, wsum, inv = histogram_keys(pack_keys(X), d, sample_weight)
    colors = unpack_keys(uniq, d)
    cdt = torch.float32 if sample_weight is None else sample_weight.dtype
    weights = (counts if wsum is None else wsum).to(cdt)
    return ColorHistogram(colors, weights, inv, counts)


def reduce_colors(
    X: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    *,
    n_clusters: int = 1,
    verbose: bool = False,
    inverse: bool = True,
) -> ColorHistogram | None:
    """The histogram of X when fitting on it pays, else None (``inverse`` as :func:`color_histogram`'s).

    It pays for uint8 X of shape (n, d) with d <= 4, at least :data:`MIN_ROWS` rows, at most
    :data:`MAX_DISTINCT_FRACTION` * n distinct rows and at least ``n_clusters`` distinct rows (fewer distinct rows
    than clusters is left to the pixel-level fit, which handles duplicate centers its own way).
    """
    if X.ndim != 2 or X.dtype != torch.uint8 or X.shape[1] > 4 or X.shape[0] < MIN_ROWS:
        return None
    hist = color_histogram(X, sample_weight, inverse=inverse)
    m, n = hist.colors.shape[0], X.shape[0]
    pays = n_clusters <= m <= MAX_DISTINCT_FRACTION * n
    if verbose:
        verdict = "fitting on the histogram" if pays else "not worth it, fitting on every row"
        print(f"Histogram reduction: {n} rows, {m} distinct ({m / n:.1%}): {verdict}")
    return hist if pays else None
