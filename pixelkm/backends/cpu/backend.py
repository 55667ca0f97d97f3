"""The fused CPU backend: numba kernels, one parallel loop per pass, bit-identical whatever the thread count.

Small ``d`` (up to :data:`SMALL_D`): the direct-difference kernel with the points as SIMD lanes. Larger ``d``: one
fused numba pass in which every worker ranks the centers of a group of rows by the expansion ``|c|^2 - 2 x.c``
(a register-blocked product whose nearest two never leave the registers: :func:`.simd.expansion_tile`), rechecks
close calls with direct differences, then adds the distances and the sums. uint8,
float32 and float64 are read in place (small d; large d reads its compute dtype, converting others chunk by chunk);
float16 and bfloat16 are converted to float32 chunk by chunk (whole blocks, so the result does not depend on the
chunking).

Threads: ``torch.get_num_threads()`` (the user's setting for the whole package), at most the cores this process may
run on; within a pass the workers share the blocks dynamically, and while another process holds a core the full
passes run on fewer threads where that measures faster (:mod:`.threads`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..._result import AssignUpdateResult, PassExtras
from .._base import Backend
from . import kernels as K
from .simd import PANEL_CHUNKS, group_lanes
from .threads import TUNER, pass_threads

#: up to this many features the direct-difference kernel runs (beyond, the GEMM path). Measured (2-core x86-64,
#: 2^20 float32 points, K = 64, ms per pass, direct / GEMM): d=3 9.7/55.9, d=8 16.5/67.8, d=12 26.3/78.4,
#: d=14 32.2/73.6, but d=15 579/79 and d=16 663/76 (K = 256: d=16 1968/166): from 15 features LLVM no longer
#: vectorizes the unrolled loop over the tile, so the GEMM path takes over there.
SMALL_D = 14
#: from this many centers the small-d pass prunes the centers per group of points (:func:`.simd.scan_pruned`; the
#: same results); measured below
PRUNE_MIN_K = 64
#: from this many centers, beyond SMALL_D features, ``algorithm="auto"`` takes Yinyang's bounds (from
#: YINYANG_MIN_K_WIDE at YINYANG_WIDE_D features or more). Whole fits to tol=1e-4, yinyang / lloyd on this backend
#: (the same iterates), n = 100,000 points, init k points of the data, 2-core x86-64, min of 2 interleaved, after the
#: large-d pass read its rows in place (2026-12-03 19:32 UTC): around 64 Gaussian blobs, d=16
#: K=32/64/128/256 1.59x/0.97x/1.02x/0.86x, d=64 1.04x/0.79x/0.74x/0.62x, d=128 0.74x/0.60x/0.72x/0.62x, d=256
#: 0.64x/0.57x/0.64x/0.82x; around 16 blobs (more centers than blobs: loose bounds), K=32/64/128, d=16
#: 1.26x/1.18x/0.93x, d=32 1.26x/1.41x/0.92x, d=64 1.42x/1.22x/0.86x, d=128 1.33x/1.02x/0.77x, d=256
#: 1.17x/1.10x/0.80x. (Before, with full passes 1.5-1.75x slower at these d, the threshold was 32 centers.)
YINYANG_MIN_K = 128
YINYANG_MIN_K_WIDE = 64
YINYANG_WIDE_D = 128
#: bytes of float64 per-block partial sums of the large-d path, at most (beyond, the pass goes in chunks)
PARTIALS_BYTES = 1 << 25
#: rows converted at a time for float16/bfloat16 input (a multiple of the block)
CONVERT_ROWS = 64 * K.BLOCK

_NUMPY_DTYPES = {torch.uint8: np.uint8, torch.float32: np.float32, torch.float64: np.float64}


def center_panels(C: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The centers (k, d) as :func:`.simd.expansion_tile` reads them: (panels, d, PW) with ``PW`` = NC vectors of
    the dtype's lanes, padded with zero centers; their squared norms (panels * PW,) in the dtype, summed in float64
    (the padding +inf); and ``(0,) * NC``, the tuple that tells the kernels NC: PANEL_CHUNKS, or 1 where one vector
    holds every center (K <= 16 in float32 on AVX-512: half the multiply-adds of two vectors, one of them padding;
    a pass at K = 16, n = 200,000, d = 32 / 64 took 6.73 / 11.46 ms against 7.63 / 14.06 with two vectors, in one
    process, interleaved, min of 15, 2026-12-03 16:33 UTC)."""
    k, d = C.shape
    lanes = group_lanes(C.dtype.itemsize)
    nc = 1 if k <= lanes else PANEL_CHUNKS
    pw = nc * lanes
    kp = -(-k // pw) * pw
    padded = np.zeros((kp, d), C.dtype)
    padded[:k] = C
    panels = np.ascontiguousarray(padded.reshape(kp // pw, pw, d).transpose(0, 2, 1))
    c64 = C.astype(np.float64)
    csq = np.full(kp, np.inf, C.dtype)
    csq[:k] = np.einsum("kd,kd->k", c64, c64)
    return panels, csq, (0,) * nc


def rounding_slack(dtype: np.dtype, d: int) -> float:
    """Relative bound of the rounding of a squared distance (direct differences or the expansion), with margin."""
    return 4.0 * (d + 3) * float(np.finfo(dtype).eps) + 64 * 2.0**-52


def feature_sums(X: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Per feature of one problem X (n, d) on the CPU, float64 (d,): the sum of the values, or with ``mean`` (d,) the
    sum of their squared deviations from it; the two passes of a variance (:func:`.kernels.column_sums`), with no
    float64 copy of X. uint8, float32 and float64 are read in place, float16 and bfloat16 converted to float32 in
    chunks of whole blocks (the same bits whatever the chunking, as the pass's). ``mean_feature_variance`` of the
    engine at n = 200,000, d = 100 float32: 6.6 ms against 132.1 for its torch passes (one process, interleaved, min
    of 7)."""
    import numba

    n, d = X.shape
    numba.set_num_threads(pass_threads())
    step = n if X.dtype in _NUMPY_DTYPES else CONVERT_ROWS
    part = K.block_partials((min(step, n) + K.BLOCK - 1) // K.BLOCK, 1, d)[0]
    out = np.zeros(d)
    m = np.empty(0) if mean is None else mean.to(torch.float64).contiguous().numpy()
    for s0 in range(0, n, step):
        xs = X[s0 : s0 + step]
        xn = (xs if xs.dtype in _NUMPY_DTYPES else xs.to(torch.float32)).contiguous().numpy()
        K.column_sums(xn, m, part, out, numba.get_num_threads())
    return torch.from_numpy(out)


class Weights64:
    """The sample weights of a fit in float64, as the kernels read them, converted once per fit instead of once per
    pass (a fit's ``cache``; 8 bytes a row for as long as the fit). Reused only for the very tensor it was made
    from, unchanged since (``torch.Tensor._version`` counts its in-place writes)."""

    KEY = "cpu:weights64"

    def __init__(self, w: torch.Tensor) -> None:
        self.w, self.version = w, w._version
        self.w64 = w.to(torch.float64).contiguous()

    @classmethod
    def of(cls, w: torch.Tensor, cache: dict | None) -> torch.Tensor:
        hit = None if cache is None else cache.get(cls.KEY)
        if hit is None or hit.w is not w or hit.version != w._version:
            hit = cls(w)
            if cache is not None:
                cache[cls.KEY] = hit
        return hit.w64

    def select(self, keep: torch.Tensor, X: torch.Tensor, sample_weight: torch.Tensor | None) -> Weights64:
        """(the cache protocol of a batch whose converged problems drop out) the weights of the others"""
        return Weights64(sample_weight)


class CpuBackend(Backend):
    name = "cpu"
    devices = ("cpu",)
    dtypes = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)
    tolerances = {
        torch.uint8: (1e-5, 1e-3),
        torch.float16: (1e-5, 1e-3),
        torch.bfloat16: (1e-5, 1e-3),
        torch.float32: (1e-5, 1e-4),
        torch.float64: (1e-12, 1e-10),
    }
    chunks = False  # its memory is a few blocks, whatever the chunk size

    def not_supported_reasons(self, X: torch.Tensor, centers: torch.Tensor) -> list[str]:
        reasons = super().not_supported_reasons(X, centers)
        if X.requires_grad or centers.requires_grad:
            reasons.append("cpu: inputs that require grad")
        return reasons

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
        """See :meth:`Backend.assign_update`; always deterministic. ``chunk_size`` does not change the result
        (nor the memory: the kernel works in fixed blocks). ``extras.bounds`` as the torch backend's: the rounding-safe
        bounds ``extras.min_sq_upper`` and ``extras.second_sq_lower``, with float64 sums and counts."""
        import numba

        compute_second = extras is not None and extras.bounds
        if compute_distances is None:
            compute_distances = compute_labels
        b, n, d = X.shape
        k = centers.shape[1]
        cdt = centers.dtype
        prev = None if extras is None or compute_second else extras.previous_labels
        out = None if prev is None else extras.labels_out
        ok = out is not None and out.shape == (b, n) and out.dtype == torch.int64 and out.is_contiguous()
        labels = out if ok else torch.empty(b, n, dtype=torch.int64)
        changed = None if prev is None else torch.zeros(b, dtype=torch.int64)
        want_dist = (compute_labels and compute_distances) or compute_second
        mind = torch.empty(b, n, dtype=cdt) if want_dist else None
        second = torch.empty(b, n, dtype=cdt) if compute_second else None
        sums = torch.zeros(b, k, d, dtype=torch.float64)
        counts = torch.zeros(b, k, dtype=torch.float64)
        w64 = None if sample_weight is None else Weights64.of(sample_weight, cache)

        def run(threads: int) -> None:
            numba.set_num_threads(threads)
            try:
                for i in range(b):
                    w = None if w64 is None else w64[i]
                    self._one(
                        X[i],
                        centers[i],
                        w,
                        labels[i],
                        None if mind is None else mind[i],
                        None if second is None else second[i],
                        sums[i],
                        counts[i],
                        None if prev is None else prev[i],
                    )
                    if changed is not None:
                        changed[i] = self._moved
            finally:  # numba's count is the thread's: the kernels after (init, histogram) run on the setting
                numba.set_num_threads(top)

        # every full pass of one kind does the same work: timed, so that a busy core costs fewer threads (a fit's
        # first pass and its passes that count the changed labels took the same time: one kind, 3.1-3.3 ms at
        # n = 200,000, d = 32, K = 16; the final pass with distances 4.3)
        kind = (tuple(X.shape), k, X.dtype, cdt, w64 is None, want_dist, compute_second)
        top = pass_threads()
        TUNER.run(kind, top, run)
        if changed is not None:
            extras.n_changed = changed
        if compute_second:
            s = rounding_slack(np.dtype(str(cdt).split(".")[1]), d)
            upper = mind * (1 + s)
            lower = (second * (1 - s)).clamp_(min=0.0)
            extras.min_sq_upper, extras.second_sq_lower = upper, lower
            return AssignUpdateResult(labels, None, sums, counts)
        out_lab = labels if compute_labels else None
        out_dist = mind if compute_labels and compute_distances else None
        return AssignUpdateResult(out_lab, out_dist, sums.to(cdt), counts.to(cdt))

    def _one(self, X, C, w, labels, mind, second, sums, counts, prev=None) -> None:
        """One problem: X (n, d), C (k, d); outputs written in place (mind/second may be None). With ``prev``
        (the previous labels), ``self._moved`` is the number of labels that differ from them."""
        import numba

        n, d = X.shape
        k = C.shape[0]
        Cn = C.contiguous().numpy()
        cnp = Cn.dtype
        empty = np.empty(0, dtype=cnp)
        # weights in float64 (they are multiplied in float64 anyway): one compiled variant fewer per dtype
        wn = np.empty(0) if w is None else w.to(torch.float64).contiguous().numpy()
        lab = labels.numpy()
        md = empty if mind is None else mind.numpy()
        sc = empty if second is None else second.numpy()
        S = sums.numpy()
        N = counts.numpy()
        mode = 1 if second is not None else 0
        nthreads = numba.get_num_threads()
        convert = X.dtype not in _NUMPY_DTYPES
        pv = np.empty(0, np.int64) if prev is None else prev.contiguous().numpy()
        self._moved = 0
        if d <= SMALL_D:
            step = CONVERT_ROWS if convert else n
            nb = (min(step, n) + K.BLOCK - 1) // K.BLOCK
            part_s, part_c = K.block_partials(nb, k, d)
            moved = np.zeros(nb if pv.size else 0, np.int64)
            for s0 in range(0, n, step):
                s1 = min(n, s0 + step)
                xs = X[s0:s1]
                # (C order for the converted chunks too: an 'F' array would be another compiled variant)
                xn = (xs.to(torch.float32) if convert else xs).contiguous().numpy()
                K.small_pass(
                    xn,
                    Cn,
                    wn[s0:s1] if wn.size else wn,
                    lab[s0:s1],
                    pv[s0:s1] if pv.size else pv,
                    moved,
                    md[s0:s1] if md.size else md,
                    sc[s0:s1] if sc.size else sc,
                    part_s,
                    part_c,
                    S,
                    N,
                    (0,) * d,
                    mode,
                    k >= PRUNE_MIN_K,
                    nthreads,
                )
                if pv.size:
                    self._moved += int(moved[: (s1 - s0 + K.BLOCK - 1) // K.BLOCK].sum())
            return
        # large d: one fused pass (the expansion in registers per group of rows, argmin / recheck / sums); chunks
        # of whole blocks, so that the float64 partials stay within PARTIALS_BYTES
        CP, csq, chunks = center_panels(Cn)
        slack = rounding_slack(cnp, d)
        per_block = 8 * k * (d + 1)  # bytes of one block's partials
        step = K.BLOCK * max(2 * nthreads, PARTIALS_BYTES // per_block)
        if convert or X.dtype != C.dtype:
            step = min(step, CONVERT_ROWS)
        nb = (min(step, n) + K.BLOCK - 1) // K.BLOCK
        part_s, part_c = K.block_partials(nb, k, d)
        moved = np.zeros(nb if pv.size else 0, np.int64)
        for s0 in range(0, n, step):
            s1 = min(n, s0 + step)
            xs = X[s0:s1]
            xn = xs.contiguous().numpy() if xs.dtype == C.dtype else xs.to(C.dtype).contiguous().numpy()
            K.gemm_pass(
                xn,
                Cn,
                CP,
                csq,
                chunks,
                slack,
                wn[s0:s1] if wn.size else wn,
                lab[s0:s1],
                pv[s0:s1] if pv.size else pv,
                moved,
                md[s0:s1] if md.size else md,
                sc[s0:s1] if sc.size else sc,
                part_s,
                part_c,
                S,
                N,
                mode,
                nthreads,
            )
            if pv.size:
                self._moved += int(moved[: (s1 - s0 + K.BLOCK - 1) // K.BLOCK].sum())

    def feature_sums(self, X: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        """See :meth:`Backend.feature_sums`: :func:`feature_sums`."""
        return feature_sums(X, mean)

    def bounds(self, X: torch.Tensor, sample_weight: torch.Tensor | None, n_clusters: int, kind: str = "hamerly"):
        """Hamerly's bounded pass for one problem (see :class:`.bounds.HamerlyBounds`; None beyond :data:`SMALL_D`)
        or Yinyang's (:class:`.bounds.YinyangBounds`, any ``d``)."""
        from .bounds import HamerlyBounds, YinyangBounds

        if X.ndim != 2 or X.device.type != "cpu" or X.dtype not in self.dtypes:
            return None
        if kind == "yinyang":
            cdt = torch.float64 if X.dtype == torch.float64 else torch.float32
            return YinyangBounds(X, sample_weight, n_clusters, cdt)
        if kind != "hamerly" or X.shape[1] > SMALL_D:
            return None
        return HamerlyBounds(self, X, sample_weight, n_clusters)

    def auto_bounds(self, n: int, d: int, n_clusters: int, budget: int) -> str | None:
        """Yinyang's bounds beyond :data:`SMALL_D` features from :data:`YINYANG_MIN_K` centers (from
        :data:`YINYANG_MIN_K_WIDE` at :data:`YINYANG_WIDE_D` features or more; see there), else full
        passes (faster than Hamerly's bounds on this kernel: ``pixelkm.engine.bounds.AUTO_RULE``)."""
        from .bounds import yinyang_bytes_per_row

        min_k = YINYANG_MIN_K_WIDE if d >= YINYANG_WIDE_D else YINYANG_MIN_K
        if d > SMALL_D and n_clusters >= min_k and n * yinyang_bytes_per_row(n_clusters, d) <= budget:
            return "yinyang"
        return None
