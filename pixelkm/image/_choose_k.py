"""choose_k: inertia (elbow) and silhouette over a range of k, and a suggested k.

Color features are fitted on the exact color histogram once converted (every k reuses it); position + color
features on the grid sample that segment uses. The silhouette is computed on a random sample of pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import resolve_generator
from ..engine.subsample import random_subset
from ..estimators.kmeans import KMeans
from ..io.pillow import ImageError
from ..io.progress import progress as progress_bar
from ._common import check_k, color_data, fit_colors
from ._features import check_features
from ._io import LoadedImage, as_image
from ._segment import FIT_SIZE, Scaler, sample_grid, xy_color


def silhouette_score(X: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean silhouette coefficient of points X (n, d) with ``labels`` (n,), exactly as scikit-learn defines it
    (Euclidean distance; a point alone in its cluster scores 0). NaN when fewer than 2 or more than n - 1
    clusters are present."""
    X = X.to(torch.float64)
    _, lab = torch.unique(labels, return_inverse=True)
    n = X.shape[0]
    k = int(lab.max()) + 1 if n else 0
    if not 2 <= k <= n - 1:
        return math.nan
    D = torch.cdist(X, X, compute_mode="donot_use_mm_for_euclid_dist")
    onehot = F.one_hot(lab, k).to(torch.float64)
    sums = D @ onehot  # (n, k): total distance of each point to each cluster
    sizes = onehot.sum(0)
    own = sizes[lab]
    a = sums.gather(1, lab.unsqueeze(1)).squeeze(1) / (own - 1).clamp_min(1)
    mean_other = (sums / sizes).masked_fill(onehot.bool(), math.inf)
    b = mean_other.min(1).values
    s = (b - a) / torch.maximum(a, b)
    s = torch.where(own > 1, torch.nan_to_num(s, nan=0.0), torch.zeros_like(s))
    return float(s.mean())


def elbow(ks: list[int], inertias: list[float]) -> int:
    """The k of the elbow of a decreasing inertia curve: the point farthest below the chord from the first to
    the last point, both axes scaled to 0..1 (the "kneedle" rule)."""
    x = np.asarray(ks, dtype=np.float64)
    y = np.asarray(inertias, dtype=np.float64)
    if len(x) < 3 or y[0] == y[-1]:
        return int(x[int(np.argmin(y))]) if len(x) < 3 else int(x[0])
    xs = (x - x[0]) / (x[-1] - x[0])
    ys = (y - y[-1]) / (y[0] - y[-1])
    gap = (1 - xs) - ys  # chord from (0, 1) to (1, 0), minus the curve
    return int(x[int(np.argmax(gap))])


@dataclass
class ChooseKResult:
    """Result of :func:`choose_k`.

    Attributes
    ----------
    ks : list of int
    inertia : list of float
        k-means inertia for every k (the elbow curve).
    silhouette : list of float
        Silhouette score of a random sample of the pixels for every k (higher is better; NaN for k = 1).
    elbow_k : int
        The k at the elbow of the inertia curve.
    silhouette_k : int
        The k with the highest silhouette score.
    suggested_k : int
        The elbow's k (the silhouette's when fewer than three ks were tried).
    """

    ks: list[int]
    inertia: list[float]
    silhouette: list[float]
    elbow_k: int
    silhouette_k: int | None
    suggested_k: int
    sample_size: int
    features: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ks": self.ks,
            "inertia": self.inertia,
            "silhouette": [None if math.isnan(s) else s for s in self.silhouette],
            "elbow_k": self.elbow_k,
            "silhouette_k": self.silhouette_k,
            "suggested_k": self.suggested_k,
            "sample_size": self.sample_size,
            "features": self.features,
        }


def _subset(img: LoadedImage, fit_size: int, gen: torch.Generator) -> LoadedImage:
    """A (1, n, 3) image of ``fit_size`` random opaque pixels of ``img``."""
    H, W, _ = img.pixels.shape
    flat = img.pixels.reshape(H * W, 3)
    if img.alpha is not None:
        flat = flat[img.opaque.reshape(-1)]
    pick = random_subset(flat.shape[0], fit_size, gen).to(flat.device)
    return LoadedImage(flat[pick].unsqueeze(0))


def choose_k(
    image: Any,
    ks: Iterable[int] = range(2, 11),
    *,
    features: str = "rgb",
    sample_size: int = 2000,
    fit_size: int | None = None,
    spatial_weight: float = 1.0,
    n_init: int = 1,
    max_iter: int = 300,
    random_state: Any = 0,
    device: Any = None,
    backend: str = "auto",
    max_pixels: int | None = None,
    progress: bool = False,
) -> ChooseKResult:
    """Fit k-means for every k in ``ks``: inertia (elbow curve), silhouette on a sample, and a suggested k.

    Color features ("rgb", "lab", "oklab") are fitted on the exact color histogram of the pixels (of
    ``fit_size`` random pixels when given; the inertia is then that of the subset). Position + color features
    are fitted on a regular grid sample of at most ``fit_size`` pixels (default 2^19), as in :func:`segment`.
    The silhouette is computed (with torch, on the device) on ``sample_size`` fitted pixels drawn at random
    with ``random_state``, in the feature space of the fit, with the labels of the fit.
    """
    ks = sorted({check_k(k, "every k in ks") for k in ks})
    if not ks:
        raise ValueError("ks must hold at least one k")
    sample_size = check_k(sample_size, "sample_size")
    check_features(features)
    if fit_size is not None:
        fit_size = check_k(fit_size, "fit_size")
    img, _ = as_image(image, max_pixels=max_pixels, device=device)
    if img.alpha is not None and not bool(img.opaque.any()):
        raise ImageError("every pixel of the image is transparent: there is nothing to cluster")
    gen = resolve_generator(random_state)
    fit_kw = {"n_init": n_init, "max_iter": max_iter, "random_state": random_state, "backend": backend}
    if features.startswith("xy"):
        yy, xx, rgb = sample_grid(img, fit_size or FIT_SIZE)
        raw = xy_color(rgb, xx, yy, features[2:])
        X = Scaler(raw, spatial_weight)(raw)
        n = X.shape[0]
        data = None
    else:
        n_px = int(img.opaque.sum()) if img.alpha is not None else img.pixels.shape[0] * img.pixels.shape[1]
        if fit_size is not None and fit_size < n_px:
            img = _subset(img, fit_size, gen)
        data = color_data(img, features)
        n = int(data.counts.sum())
        if ks[-1] > data.n_distinct:
            raise ValueError(f"k={ks[-1]} is more than the {data.n_distinct} distinct colors to fit")
    if ks[-1] > n:
        raise ValueError(f"k={ks[-1]} is more than the {n} (opaque) pixels to fit")
    sample = random_subset(n, sample_size, gen)
    rows = sample if data is None else data.inverse_at(sample)
    Xs = (X if data is None else data.X)[rows.to((X if data is None else data.X).device)]
    inertias, sils = [], []
    for k in progress_bar(ks, enabled=progress, desc="choose-k", total=len(ks)):
        if data is None:
            km = KMeans(k, **fit_kw).fit(X)
            inertia, labels = float(km.inertia_), km.labels_
        else:
            fit = fit_colors(data, k, **fit_kw)
            inertia, labels = fit.inertia, fit.labels
        inertias.append(inertia)
        sils.append(silhouette_score(Xs, labels[rows.to(labels.device)]) if k > 1 else math.nan)
    valid = [(s, k) for s, k in zip(sils, ks) if not math.isnan(s)]
    sil_k = max(valid, key=lambda t: t[0])[1] if valid else None
    elbow_k = elbow(ks, inertias)
    suggested = elbow_k if len(ks) >= 3 or sil_k is None else sil_k
    return ChooseKResult(ks, inertias, sils, elbow_k, sil_k, suggested, int(sample.numel()), features)
