"""The pure-PyTorch reference backend: chunked matmul distances, argmin, index_add.

It runs wherever torch runs (CPU, CUDA, MPS) and is the oracle of every other backend. Its extra
memory is bounded: it never builds the full n x k distance matrix, only one (b, rows, k) block at a time.
"""

from __future__ import annotations

import torch

from .._result import AssignUpdateResult
from .._validation import SUPPORTED_DTYPES
from ._base import Backend

#: bytes of one distance block on the CPU: small enough to stay in cache
_CPU_BLOCK_BYTES = 1 << 20
#: bytes of one distance block on an accelerator: large enough to keep it busy
_GPU_BLOCK_BYTES = 256 << 20


def default_chunk_rows(b: int, k: int, itemsize: int, device: torch.device, n: int) -> int:
    """Rows per chunk so that one (b, rows, k) distance block stays within the block budget."""
    budget = _CPU_BLOCK_BYTES if device.type == "cpu" else _GPU_BLOCK_BYTES
    rows = budget // max(1, b * k * itemsize)
    if device.type == "cpu":
        rows = max(rows, 256)  # below this, per-chunk overhead dominates
    return int(max(1, min(n, rows)))


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

    def assign_update(
        self,
        X: torch.Tensor,
        centers: torch.Tensor,
        sample_weight: torch.Tensor | None,
        *,
        compute_labels: bool = True,
        chunk_size: int | None = None,
    ) -> AssignUpdateResult:
        b, n, d = X.shape
        k = centers.shape[1]
        cdt = centers.dtype
        acc = torch.float64
        dev = X.device
        # Distances are translation invariant: work around the centers' mean so that data far from
        # the origin does not lose its digits in ||x||^2 - 2 x.c + ||c||^2.
        shift = centers.mean(1, keepdim=True)
        c = centers - shift
        c_sq = (c * c).sum(-1).unsqueeze(1)  # (b, 1, k)
        c_m2t = (-2.0 * c).transpose(1, 2)  # (b, d, k)
        sums = torch.zeros(b * k, d, dtype=acc, device=dev)
        counts = torch.zeros(b * k, dtype=acc, device=dev)
        labels = torch.empty(b, n, dtype=torch.int64, device=dev) if compute_labels else None
        min_sq = torch.empty(b, n, dtype=cdt, device=dev) if compute_labels else None
        offsets = (torch.arange(b, device=dev) * k).unsqueeze(1)
        rows = chunk_size or default_chunk_rows(b, k, c.element_size(), dev, n)
        part = torch.empty(b * k, d, dtype=cdt, device=dev)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            xc = X[:, start:stop].to(cdt) - shift  # (b, r, d): one chunk, never the whole X
            dist = torch.baddbmm(c_sq, xc, c_m2t)  # ||c||^2 - 2 x.c, shape (b, r, k)
            m, lab = dist.min(-1)
            if compute_labels:
                labels[:, start:stop] = lab
                torch.clamp_min(m + (xc * xc).sum(-1), 0.0, out=min_sq[:, start:stop])
            flat = (lab + offsets).reshape(-1)
            if sample_weight is None:
                xw, cw = xc, None
            else:
                wc = sample_weight[:, start:stop]
                xw, cw = xc * wc.unsqueeze(-1), wc.reshape(-1)
            part.zero_().index_add_(0, flat, xw.reshape(-1, d))
            sums += part
            counts += torch.bincount(flat, weights=cw, minlength=b * k)
        sums = sums.view(b, k, d) + counts.view(b, k, 1) * shift.to(acc)
        return AssignUpdateResult(labels, min_sq, sums.to(cdt), counts.view(b, k).to(cdt))
