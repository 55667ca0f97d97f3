"""pixelkm: GPU-first k-means for huge images and any tensor data."""

from . import distributed, nn
from ._kmeans import KMeans, kmeans
from ._minibatch import MiniBatchKMeans
from ._result import AssignUpdateResult
from ._stream import fit_stream, predict_stream
from ._strips import read_strips, strip_readable
from ._validation import ConvergenceWarning, NotFittedError
from .backends import available_backends
from .ops import assign_update

__version__ = "0.1.0"

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
