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
    import os

    if not {"NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"} & set(os.environ):
        # OpenMP before TBB (numba's default order is TBB first): numba's OpenMP layer runs on the libgomp that torch
        # has loaded, so the kernels and torch's operations between them share one pool of threads. Where a library
        # has loaded TBB (scikit-learn-intelex does) numba would take it, and the two pools then spin against each
        # other between passes: 10 Lloyd iterations at d = 32, K = 16 (n = 200,000) took 136-140 ms in a process
        # that had imported sklearnex against 87-92 ms without, and 106-114 ms with this order (the passes alone
        # 84-99 ms in all three; 2-core AMD EPYC, 2026-12-03). No effect once numba has started its threads.
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

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
