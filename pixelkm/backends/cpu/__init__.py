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
    try:
        from .backend import CpuBackend
    except RuntimeError as err:  # cache=True where no cache folder is writable (read-only install, no user cache)
        if "no locator available" not in str(err):
            raise
        import sys
        import tempfile

        numba.config.CACHE_DIR = tempfile.mkdtemp(prefix="pixelkm-numba-")  # compiled once per process, no error
        for mod in ("kernels", "bounds", "backend"):
            sys.modules.pop(f"{__name__}.{mod}", None)
        from .backend import CpuBackend
else:  # pragma: no cover
    CpuBackend = None  # type: ignore[assignment,misc]

__all__ = ["CPU_AVAILABLE", "CPU_MISSING", "CpuBackend"]
