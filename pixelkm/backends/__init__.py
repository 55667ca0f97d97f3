"""The registry of assign-and-update backends.

``backend="auto"`` walks :data:`PRIORITY` and takes the first backend with no reasons not to run;
an explicit backend that cannot run raises an error listing every reason. The environment variable
``PIXELKM_BACKEND`` overrides ``"auto"`` and is validated against the registry. The Triton backend is imported
on first need (importing triton costs about 0.4 s): when it is named, listed, or "auto" runs on a CUDA tensor.
"""

from __future__ import annotations

import os

import torch

from ._base import Backend
from .cpu import CPU_AVAILABLE, CPU_MISSING, CpuBackend  # imports numba only if it can
from .torch_backend import TorchBackend

_REGISTRY: dict[str, Backend] = {}
#: the order in which ``"auto"`` tries backends
PRIORITY: list[str] = []
ENV_VAR = "PIXELKM_BACKEND"


def register_backend(backend: Backend, *, priority: int | None = None) -> None:
    """Add ``backend`` to the registry; ``priority`` is its place in the auto order (default: last)."""
    _REGISTRY[backend.name] = backend
    if backend.name in PRIORITY:
        PRIORITY.remove(backend.name)
    PRIORITY.insert(len(PRIORITY) if priority is None else priority, backend.name)


def _load_triton() -> None:
    """Register the Triton backend where its kernels import (once)."""
    global _TRITON_LOADED
    if _TRITON_LOADED:
        return
    _TRITON_LOADED = True
    from .triton_backend import TRITON_AVAILABLE, TritonBackend  # imports triton only if it can

    if TRITON_AVAILABLE:
        register_backend(TritonBackend(), priority=0)  # before torch: auto takes it on CUDA


_TRITON_LOADED = False


def available_backends() -> list[str]:
    """Names of the registered backends, in auto-selection order."""
    _load_triton()
    return list(PRIORITY)


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        _load_triton()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(['auto', *PRIORITY])}") from None


def select_backend(name: str, X: torch.Tensor, centers: torch.Tensor) -> Backend:
    """The backend that runs ``X`` against ``centers``: the named one, or the first that can for "auto"."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, got {type(name).__name__}")
    if name == "auto":
        env = os.environ.get(ENV_VAR, "").strip()
        if env and env != "auto":
            get_backend(env)  # validate the override
            name = env
    if name != "auto":
        backend = get_backend(name)
        reasons = backend.not_supported_reasons(X, centers)
        if reasons:
            raise ValueError(f"backend {name!r} cannot run these inputs: " + "; ".join(reasons))
        return backend
    if X.device.type != "cpu":
        _load_triton()
    all_reasons = []
    for candidate in PRIORITY:
        backend = _REGISTRY[candidate]
        # auto_reasons hold for auto only (e.g. triton's CPU interpreter serves explicit requests, never auto)
        reasons = backend.not_supported_reasons(X, centers) or backend.auto_reasons(X, centers)
        if not reasons:
            return backend
        all_reasons.extend(reasons)
    raise ValueError("no backend can run these inputs: " + "; ".join(all_reasons))


register_backend(TorchBackend())
if CPU_AVAILABLE:
    register_backend(CpuBackend(), priority=0)  # before torch: auto takes it on the CPU (torch stays the reference)

__all__ = [
    "CPU_MISSING",
    "Backend",
    "PRIORITY",
    "available_backends",
    "get_backend",
    "register_backend",
    "select_backend",
]
