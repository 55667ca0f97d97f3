"""pixelkm: GPU-first k-means for huge images and any tensor data.

The public names load on first use (PEP 562), so that ``import pixelkm`` and the ``pixelkm`` command's ``--help``
do not pay for torch, torch.distributed or the image toolkit before they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "AssignUpdateResult": "._result",
    "KMeans": ".estimators.kmeans",
    "kmeans": ".estimators.kmeans",
    "MiniBatchKMeans": ".estimators.minibatch",
    "ConvergenceWarning": "._validation",
    "NotFittedError": "._validation",
    "assign_update": ".ops",
    "available_backends": ".backends",
    "fit_stream": ".estimators.stream",
    "predict_stream": ".estimators.stream",
    "read_strips": ".io.strips",
    "strip_readable": ".io.strips",
}
#: public submodules
_SUBMODULES = ("distributed", "image", "nn")

__all__ = [
    "AssignUpdateResult",
    "ConvergenceWarning",
    "KMeans",
    "MiniBatchKMeans",
    "NotFittedError",
    "assign_update",
    "available_backends",
    "distributed",
    "fit_stream",
    "kmeans",
    "nn",
    "predict_stream",
    "read_strips",
    "strip_readable",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'pixelkm' has no attribute {name!r}")
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC, *_SUBMODULES})


if TYPE_CHECKING:  # for type checkers and IDEs: the names as if imported eagerly
    from . import distributed, image, nn  # noqa: F401
    from ._result import AssignUpdateResult
    from ._validation import ConvergenceWarning, NotFittedError
    from .backends import available_backends
    from .estimators.kmeans import KMeans, kmeans
    from .estimators.minibatch import MiniBatchKMeans
    from .estimators.stream import fit_stream, predict_stream
    from .io.strips import read_strips, strip_readable
    from .ops import assign_update
