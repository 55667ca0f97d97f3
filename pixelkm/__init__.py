"""pixelkm: GPU-first k-means for huge images and any tensor data."""

from ._kmeans import KMeans, kmeans
from ._result import AssignUpdateResult
from ._validation import NotFittedError
from .backends import available_backends
from .ops import assign_update

__version__ = "0.1.0"

__all__ = ["AssignUpdateResult", "KMeans", "NotFittedError", "assign_update", "available_backends", "kmeans"]
