"""segment: regions of similar color by k-means on pixel position + color, with bounded memory.

Position + color features ("xyrgb", "xylab", "xyoklab") are fitted on a regular grid sample of at most
``fit_size`` opaque pixels (every s-th row and column; the whole image when it is small enough), standardized
with the sample's mean and deviation; then every pixel is labelled in strips of rows, each strip's features
built, assigned and dropped, so that no feature matrix of the whole image exists. Color-only features are
fitted exactly on the color histogram, as in quantize.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from .._validation import to_output as output
from ..estimators.kmeans import KMeans
from ..io.pillow import ImageError
from ..ops import assign_update
from ._clean import find_outliers, outlier_weights
from ._common import SaveInfo, as_pil, check_k, fit_image_colors, fit_palette, paint, pixel_labels, save_as, with_alpha
from ._features import check_features, color_features
from ._io import LoadedImage, as_image

#: default largest sample of pixels that an "xy..." fit runs on (about every 7th pixel per axis at 12 MP)
FIT_SIZE = 1 << 18
#: pixels per labelling strip
_STRIP_PIXELS = 1 << 20


def distinct_colors(n: int, device: Any = None) -> torch.Tensor:
    """``n`` well-separated uint8 colors (hues spaced by the golden ratio, alternating lightness)."""
    i = torch.arange(n, dtype=torch.float64, device=device)
    h = (i * 0.618033988749895) % 1.0
    s = torch.full_like(h, 0.75)
    v = torch.where(i % 2 == 0, 0.95, 0.75)
    k = (h.unsqueeze(1) * 6 + torch.tensor([5.0, 3.0, 1.0], dtype=torch.float64, device=device)) % 6
    rgb = v.unsqueeze(1) - v.unsqueeze(1) * s.unsqueeze(1) * (torch.minimum(k, 4 - k).clamp(0, 1))
    return (rgb * 255).round().to(torch.uint8)


def _boundaries(labels: torch.Tensor) -> torch.Tensor:
    """Bool (H, W): pixels whose right or lower neighbour has another label."""
    b = torch.zeros_like(labels, dtype=torch.bool)
    b[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    b[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return b


@dataclass
class SegmentResult:
    """Result of :func:`segment`.

    Attributes
    ----------
    labels : int64 (H, W)
        Segment of every pixel, largest segment first; -1 where the image is transparent.
    overlay : uint8 (H, W, 3) or (H, W, 4)
        The image blended half-and-half with one distinct color per segment, boundaries in white.
    mean_image : uint8 (H, W, 3) or (H, W, 4)
        Every pixel painted with its segment's mean color.
    sizes : int64 (k,)
        Pixels per segment.
    mean_colors : uint8 (k, 3)
        Mean sRGB color per segment.
    inertia : float
        Sum over every (opaque) pixel of its squared distance to its segment's center, in feature units.
    fit_pixels : int
        Pixels the k-means fit ran on (a grid sample of large images for "xy..." features).
    """

    labels: Any
    overlay: Any
    mean_image: Any
    sizes: Any
    mean_colors: Any
    inertia: float
    features: str
    original: Any = field(repr=False)
    fit_pixels: int = 0
    #: the input file (None for arrays): never replaced by :meth:`save`
    _source: Any = field(default=None, repr=False)

    @property
    def n_segments(self) -> int:
        return int(self.sizes.shape[0])

    def save(self, path: str | os.PathLike, *, force: bool = False) -> SaveInfo:
        """Write the overlay atomically (never over the input file, ``force`` or not)."""
        t = torch.as_tensor(self.overlay).cpu()
        return save_as(
            as_pil(t[:, :, :3], t[:, :, 3] if t.shape[2] == 4 else None), path, force, inputs=(self._source,)
        )


def xy_color(rgb: torch.Tensor, x: torch.Tensor, y: torch.Tensor, space: str) -> torch.Tensor:
    """Raw (n, 5) float32 features: x, y, then the color in ``space``."""
    return torch.cat([torch.stack([x, y], 1).to(torch.float32), color_features(rgb, space)], dim=1)


class Scaler:
    """The standardization of "xy..." features (``(raw - mean) / scale``, then x and y times the weight)."""

    def __init__(self, raw: torch.Tensor, spatial_weight: float) -> None:
        X = raw.double()
        self.mean = X.mean(0)
        sd = X.std(0, correction=0)
        self.scale = torch.where(sd > 0, sd, torch.ones_like(sd))
        w = torch.ones_like(self.mean)
        w[:2] = spatial_weight
        self.factor = (w / self.scale).to(torch.float32)
        self.mean = self.mean.to(torch.float32)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.sub_(self.mean).mul_(self.factor)


def sample_grid(img: LoadedImage, fit_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row and column coordinates and colors of the opaque pixels on a grid of step s (s = 1 when the image
    has at most ``fit_size`` opaque pixels)."""
    H, W, _ = img.pixels.shape
    dev = img.pixels.device
    n = H * W if img.alpha is None else int(img.opaque.sum())
    s = max(1, math.ceil(math.sqrt(n / fit_size)))
    ys = torch.arange(0, H, s, device=dev)
    xs = torch.arange(0, W, s, device=dev)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    yy, xx = yy.reshape(-1), xx.reshape(-1)
    if img.alpha is not None:
        keep = img.opaque[yy, xx]
        yy, xx = yy[keep], xx[keep]
    return yy, xx, img.pixels[yy, xx]


def _segment_xy(img, n_segments, space, spatial_weight, clean, outlier_weight, fit_size, fit_kw):
    H, W, _ = img.pixels.shape
    dev = img.pixels.device
    yy, xx, rgb = sample_grid(img, fit_size)
    if yy.numel() == 0:
        raise ImageError("every pixel of the image is transparent: there is nothing to cluster")
    raw = xy_color(rgb, xx, yy, space)
    scaler = Scaler(raw, spatial_weight)
    Xs = scaler(raw)
    outliers = w = None
    if clean is not None:
        outliers = find_outliers(img.pixels, img.opaque)
        w = outlier_weights(outliers, yy * W + xx, clean, outlier_weight)
    k = min(n_segments, Xs.shape[0] if w is None else int((w > 0).sum()))
    km = KMeans(k, **fit_kw).fit(Xs, sample_weight=w)
    centers = km.cluster_centers_
    del raw, Xs
    labels = torch.empty(H, W, dtype=torch.int64, device=dev)
    inertia = 0.0
    rows = max(1, _STRIP_PIXELS // W)
    xcol = torch.arange(W, device=dev)
    for top in range(0, H, rows):
        bot = min(H, top + rows)
        px = img.pixels[top:bot].reshape(-1, 3)
        y = torch.arange(top, bot, device=dev).repeat_interleave(W)
        x = xcol.repeat(bot - top)
        res = assign_update(scaler(xy_color(px, x, y, space)), centers, backend=fit_kw["backend"])
        lab = res.labels
        if img.alpha is not None:
            op = img.opaque[top:bot].reshape(-1)
            lab = torch.where(op, lab, -1)
            inertia += float(res.min_sq_dist[op].double().sum())
        else:
            inertia += float(res.min_sq_dist.double().sum())
        labels[top:bot] = lab.reshape(bot - top, W)
    return labels, k, inertia, int(yy.numel()), outliers


def _mean_colors(img: LoadedImage, labels: torch.Tensor, k: int, outliers, clean, outlier_weight):
    """Mean color (k, 3) float64 (weighted by the outlier weights when cleaning) and pixel count (k,) of each
    label, in strips of rows."""
    H, W, _ = img.pixels.shape
    dev = img.pixels.device
    usum = torch.zeros(k + 1, 3, dtype=torch.float64, device=dev)
    wsum = torch.zeros_like(usum)
    wcnt = torch.zeros(k + 1, dtype=torch.float64, device=dev)
    ucnt = torch.zeros(k + 1, dtype=torch.float64, device=dev)
    rows = max(1, _STRIP_PIXELS // W)
    for top in range(0, H, rows):
        lab = labels[top : top + rows].reshape(-1) + 1  # slot 0: transparent
        c = img.pixels[top : top + rows].reshape(-1, 3).double()
        usum.index_add_(0, lab, c)
        ucnt += torch.bincount(lab, minlength=k + 1).double()
        if outliers is not None:
            flags = outliers.mask[top : top + rows].reshape(-1)
            wv = torch.where(flags, 0.0 if clean == "remove" else float(outlier_weight), 1.0).double()
            wsum.index_add_(0, lab, c * wv[:, None])
            wcnt.index_add_(0, lab, wv)
    usum, ucnt, wsum, wcnt = usum[1:], ucnt[1:], wsum[1:], wcnt[1:]
    umean = usum / ucnt.clamp_min(1).unsqueeze(1)
    if outliers is None:
        return umean, ucnt
    return torch.where((wcnt > 0).unsqueeze(1), wsum / wcnt.clamp_min(1e-300).unsqueeze(1), umean), ucnt


def segment(
    image: Any,
    n_segments: int = 8,
    *,
    features: str = "xyrgb",
    spatial_weight: float = 1.0,
    clean: str | None = None,
    outlier_weight: float = 0.1,
    fit_size: int | None = FIT_SIZE,
    n_init: int = 1,
    max_iter: int = 300,
    random_state: Any = 0,
    device: Any = None,
    backend: str = "auto",
    max_pixels: int | None = None,
) -> SegmentResult:
    """Split an image into ``n_segments`` regions by k-means on pixel features.

    ``features="xyrgb"`` (default) clusters pixel coordinates and color together, standardized, so segments
    are compact regions of similar color; ``spatial_weight`` trades compactness (large) for color fidelity
    (small). Color-only features ("rgb", "lab", "oklab") give segments that may be scattered; they are fitted
    exactly on the color histogram. ``fit_size`` bounds the pixels an "xy..." fit runs on: larger images are
    fitted on a regular grid sample of about that many pixels (None: every pixel), then every pixel is
    labelled in strips. Other parameters as in :func:`quantize`.
    """
    n_segments = check_k(n_segments, "n_segments")
    check_features(features)
    if not spatial_weight >= 0:
        raise ValueError(f"spatial_weight must be >= 0, got {spatial_weight!r}")
    if fit_size is not None:
        fit_size = check_k(fit_size, "fit_size")
    img, as_t = as_image(image, max_pixels=max_pixels, device=device)
    H, W, _ = img.pixels.shape
    fit_kw = {"n_init": n_init, "max_iter": max_iter, "random_state": random_state, "backend": backend}
    if features.startswith("xy"):
        size = fit_size if fit_size is not None else H * W
        labels, k, inertia, n_fit, outliers = _segment_xy(
            img, n_segments, features[2:], spatial_weight, clean, outlier_weight, size, fit_kw
        )
        means, sizes = _mean_colors(img, labels, k, outliers, clean, outlier_weight)
        keep = torch.nonzero(sizes > 0).flatten()
        order = keep[torch.sort(-sizes[keep], stable=True).indices]
        rank = torch.full((k + 1,), -1, dtype=torch.int64, device=labels.device)
        rank[order + 1] = torch.arange(order.numel(), device=labels.device)
        labels = rank[labels + 1]
        means = means[order].round().clamp(0, 255).to(torch.uint8)
        sizes = sizes[order]
    else:
        fit = fit_image_colors(img, n_segments, features, clean=clean, outlier_weight=outlier_weight, **fit_kw)
        means, sizes, color_labels = fit_palette(fit, merge=False)
        labels = pixel_labels(fit.data, color_labels)
        inertia, n_fit = fit.inertia, fit.data.n_distinct
    tint = paint(distinct_colors(means.shape[0], img.pixels.device), labels)
    overlay = (img.pixels | tint).bitwise_and_(1).add_(img.pixels >> 1).add_(tint >> 1)  # (a + b + 1) // 2 in uint8
    del tint
    overlay[_boundaries(labels)] = 255
    return SegmentResult(
        labels=output(labels, as_t),
        overlay=output(with_alpha(overlay, img.alpha), as_t),
        mean_image=output(with_alpha(paint(means, labels), img.alpha), as_t),
        sizes=output(sizes.to(torch.int64), as_t),
        mean_colors=output(means, as_t),
        inertia=inertia,
        features=features,
        original=output(img.pixels, as_t),
        fit_pixels=n_fit,
        _source=img.path,
    )
