"""pixelkm: GPU-first k-means for huge images and any tensor data."""

from . import distributed, nn
from ._result import AssignUpdateResult
from ._validation import NotFittedError
from .backends import available_backends
from .estimators.kmeans import KMeans, kmeans
from .estimators.minibatch import MiniBatchKMeans
from .estimators.stream import fit_stream, predict_stream
from .io.strips import read_strips, strip_readable
from .ops import assign_update

__version__ = "0.1.0"

__all__ = [
    "AssignUpdateResult",
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
