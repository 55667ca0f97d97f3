"""The Triton backend: the fused assign-and-update kernel of ``kernels/assign_update.py`` as one custom op.

One pass per Lloyd step reads every point once in its own dtype, finds its nearest center, writes its
label (in the dtype asked for) and, when asked, its squared distance, and adds it into per-cluster sums and
counts accumulated in float64; no n x k distance matrix is ever made, so ``chunk_size`` is accepted and ignored.

Reduction modes: for d <= 8 both modes give the same bits run after run (per-program slots summed in a fixed
order; only weighted or float data with k > 16 in deterministic mode takes a second, fixed-order pass). For
larger d, *fast* (the default) sums runs of points sorted by label and adds them into float64 totals with
atomics (the only run-to-run difference is the order of float64 additions, far below the float32 results'
rounding); *deterministic* (``deterministic=True``, or whenever ``torch.use_deterministic_algorithms(True)``
is on) reduces per-program partials in a fixed order: the same input gives the same bits.

It runs on CUDA, and on the CPU only under ``TRITON_INTERPRET=1`` (the Triton interpreter: slow, for tests);
``backend="auto"`` picks it on CUDA only.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from .._result import AssignUpdateResult
from ._base import Backend

try:
    from .._kernels import assign_update as _kernel
except ImportError as exc:  # triton missing or unusable here: the torch backend remains
    _kernel = None
    IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    IMPORT_ERROR = None

#: True when the kernels import (triton installed and importable)
TRITON_AVAILABLE = _kernel is not None
_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: True inside torch.compile / torch.export tracing (torch >= 2.3; older versions trace the direct call)
_is_compiling = getattr(torch.compiler, "is_compiling", None) or (lambda: False)


if TRITON_AVAILABLE:

    def _triton_assign_update_impl(
        X: torch.Tensor,
        centers: torch.Tensor,
        sample_weight: torch.Tensor | None,
        compute_labels: bool,
        compute_distances: bool,
        deterministic: bool,
        precision: str,
        label_dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fused pass as one op: (labels (b, n) label_dtype, min_sq (b, n), sums (b, k, d), counts (b, k)).

        Labels not computed have n = 0, and so do distances. ``precision`` "" means the default.
        """
        labels, min_sq, sums, counts = _kernel.assign_update(
            X,
            centers,
            sample_weight,
            compute_labels=compute_labels,
            compute_distances=compute_distances,
            label_dtype=label_dtype,
            deterministic=deterministic,
            precision=precision or None,
        )
        if labels is None:
            labels = torch.empty(X.shape[0], 0, dtype=label_dtype, device=X.device)
        if min_sq is None:
            min_sq = centers.new_empty(X.shape[0], 0)
        return labels, min_sq, sums, counts

    triton_assign_update = torch.library.custom_op("pixelkm::triton_assign_update", mutates_args=())(
        _triton_assign_update_impl
    )

    @triton_assign_update.register_fake
    def _triton_assign_update_fake(
        X, centers, sample_weight, compute_labels, compute_distances, deterministic, precision, label_dtype
    ):
        b, n, d = X.shape
        return (
            X.new_empty(b, n if compute_labels else 0, dtype=label_dtype),
            centers.new_empty(b, n if compute_distances else 0),
            centers.new_empty(b, centers.shape[1], d),
            centers.new_empty(b, centers.shape[1]),
        )


class TritonBackend(Backend):
    name = "triton"
    chunks = False  # it never builds a distance block: smaller chunks would not save memory
    devices = ("cuda", "cpu")
    dtypes = _DTYPES
    # Against the torch reference: the sums are float64 totals of float32 block partials; the large-d
    # distances use one TF32 pass on CUDA (near-ties may move; inertia within 1e-4) and IEEE in the interpreter.
    tolerances: ClassVar[dict[torch.dtype, tuple[float, float]]] = {
        torch.uint8: (1e-5, 1e-3),
        torch.float16: (1e-5, 1e-3),
        torch.bfloat16: (1e-5, 1e-3),
        torch.float32: (1e-5, 1e-4),
        torch.float64: (1e-12, 1e-10),
    }

    def not_supported_reasons(self, X: torch.Tensor, centers: torch.Tensor) -> list[str]:
        if not TRITON_AVAILABLE:
            return [f"triton: the kernels cannot be imported ({IMPORT_ERROR})"]
        reasons = []
        dev = X.device.type
        if dev == "cpu":
            if not _kernel.is_interpreted():
                reasons.append(
                    "triton: CPU tensors need the Triton interpreter (set TRITON_INTERPRET=1 before triton is imported)"
                )
        elif dev != "cuda":
            reasons.append(f"triton: device {dev!r} not supported (CUDA, or the CPU under TRITON_INTERPRET=1)")
        if X.dtype not in self.dtypes:
            reasons.append(f"triton: dtype {X.dtype} not supported (uint8, float16, bfloat16, float32, float64)")
        if centers.dtype not in (torch.float32, torch.float64):
            reasons.append(f"triton: centers dtype {centers.dtype} not supported (float32 or float64)")
        if X.ndim == 3 and X.shape[0] > _kernel.MAX_BATCH:
            reasons.append(f"triton: a batch of {X.shape[0]} problems exceeds {_kernel.MAX_BATCH} per launch")
        if centers.device != X.device:
            reasons.append(f"triton: centers on {centers.device} but X on {X.device}")
        if dev == "cuda" and X.dtype == torch.float64 and torch.cuda.get_device_capability(X.device) < (8, 0):
            reasons.append("triton: float64 needs a GPU of compute capability 8.0 or newer")
        return reasons

    def auto_reasons(self, X: torch.Tensor, centers: torch.Tensor) -> list[str]:
        """Extra reasons for ``backend="auto"`` only: the CPU interpreter is never chosen automatically."""
        if X.device.type != "cuda":
            return ["triton: auto uses it on CUDA only (the CPU interpreter is for tests)"]
        return []

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
        precision: str | None = None,
        label_dtype: torch.dtype = torch.int64,
    ) -> AssignUpdateResult:
        """The fused pass; ``chunk_size`` and ``cache`` are ignored (no distance block is made, the data is read
        in its own dtype). ``compute_distances`` (default: ``compute_labels``) False skips writing them.

        ``deterministic`` defaults to ``torch.are_deterministic_algorithms_enabled()``; ``precision`` is the
        ``tl.dot`` precision for d > 8 ("ieee", "tf32x3", "tf32" or "fp16"; default "tf32", "ieee" for float64).
        ``label_dtype`` (uint8, int16, int32 or int64, holding k - 1) is the dtype of the labels: a Lloyd loop
        that only compares labels between steps can ask for the narrowest one and save bytes per pass.
        """
        reasons = self.not_supported_reasons(X, centers)
        if reasons:
            raise ValueError("backend 'triton' cannot run these inputs: " + "; ".join(reasons))
        if deterministic is None:
            deterministic = torch.are_deterministic_algorithms_enabled()
        compute_distances = compute_labels and (compute_distances is None or compute_distances)
        # Eager calls on plain tensors launch the kernels directly; the custom op is for torch.compile, export and
        # tracing (fake or functional tensors). Its eager wrapper costs ~0.25 ms of Python per call and imports
        # torch._dynamo (and sympy) at the first call: 1.4 s or more of a short process.
        plain = type(X) is torch.Tensor and type(centers) is torch.Tensor
        plain = plain and (sample_weight is None or type(sample_weight) is torch.Tensor)
        op = _triton_assign_update_impl if plain and not _is_compiling() else triton_assign_update
        labels, min_sq, sums, counts = op(
            X,
            centers,
            sample_weight,
            compute_labels,
            bool(compute_distances),
            bool(deterministic),
            precision or "",
            label_dtype,
        )
        if not compute_labels:
            labels = None
        if not compute_distances:
            min_sq = None
        return AssignUpdateResult(labels, min_sq, sums, counts)
