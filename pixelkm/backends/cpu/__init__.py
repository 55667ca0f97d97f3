"""The fused CPU backend (numba). ``CPU_AVAILABLE`` is False where numba does not import; the torch backend serves."""

from __future__ import annotations

try:
    import numba  # noqa: F401
except ImportError as err:  # no wheel for this platform, or not installed
    CPU_AVAILABLE = False
    CPU_MISSING = f"numba is not installed ({err}): the CPU runs the torch backend"
else:
    CPU_AVAILABLE = True
    CPU_MISSING = ""

if CPU_AVAILABLE:
    from .backend import CpuBackend
else:  # pragma: no cover
    CpuBackend = None  # type: ignore[assignment,misc]

__all__ = ["CPU_AVAILABLE", "CPU_MISSING", "CpuBackend"]
