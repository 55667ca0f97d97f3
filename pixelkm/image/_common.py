"""Steps shared by the image applications: the color fit on the exact histogram, palettes from labels,
painting, alpha, PSNR and saving.

Color features ("rgb", "lab", "oklab") are always fitted on the exact color histogram of the opaque pixels:
the distinct colors, converted to the feature space, weighted by their counts (or by their summed outlier
weights). Lloyd's sums and counts on the histogram equal those on the pixels, so the iterates are those of a
per-pixel fit, at the cost of the distinct colors only; every pixel gets its label through the inverse index.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .._validation import resolve_generator
from ..engine import batched as _batched
from ..engine.histogram import color_histogram, map_rows, rescaled_tol, weighted_variance
from ..estimators.base import fit_params
from ..estimators.kmeans import KMeans
from ..io.pillow import ImageError, image_format
from ._clean import Outliers, find_outliers, outlier_weights
from ._features import check_features, color_features
from ._io import LoadedImage, as_image, save_pil

#: scikit-learn's default ``tol``, relative to the variance of the pixels (not of the distinct colors)
TOL = 1e-4


def check_k(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_color_features(features: str, what: str) -> str:
    check_features(features)
    if features.startswith("xy"):
        raise ValueError(f"{what} clusters colors: features must be rgb, lab or oklab, got {features!r}")
    return features


def opaque_rows(img: LoadedImage) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 (n, 3) colors of the opaque pixels and their row-major index (None: every pixel, in order)."""
    H, W, _ = img.pixels.shape
    flat = img.pixels.reshape(H * W, 3)
    mask = img.opaque
    if mask is None or bool(mask.all()):
        return flat, None
    index = torch.nonzero(mask.reshape(-1)).flatten()
    if index.numel() == 0:
        raise ImageError("every pixel of the image is transparent: there is nothing to cluster")
    return flat[index], index


@dataclass
class ColorData:
    """The exact color histogram of an image's opaque pixels, in a feature space.

    colors : uint8 (m, 3) distinct sRGB colors; X : (m, d) their features (float32); counts : float64 (m,)
    pixels per color; weights : (m,) fit weights (the counts, or summed outlier weights); rows : uint8 (n, 3 or
    4) the opaque pixels' colors; inverse : int64 (n,) the distinct color of every opaque pixel (made on first
    use); index : row-major index of the opaque pixels (None: all).
    """

    img: LoadedImage
    features: str
    colors: torch.Tensor
    X: torch.Tensor
    counts: torch.Tensor
    weights: torch.Tensor
    rows: torch.Tensor
    index: torch.Tensor | None
    outliers: Outliers | None
    _inverse: torch.Tensor | None = None
    _tols: dict | None = None

    @property
    def n_distinct(self) -> int:
        return int(self.colors.shape[0])

    @property
    def inverse(self) -> torch.Tensor:
        if self._inverse is None:
            self._inverse = self.row_values(torch.arange(self.n_distinct, device=self.colors.device))
        return self._inverse

    def abs_tol(self, tol: float = TOL) -> torch.Tensor:
        """The absolute tolerance (1,) float64 of a fit on the distinct colors: ``tol`` times the pixels'
        variance (what KMeans(tol=self.tol(tol)) computes from the distinct colors)."""
        if self._tols is None:
            self._tols = {}
        key = ("abs", tol)
        if key not in self._tols:
            var = weighted_variance(self.X, self.counts) if tol > 0 else self.X.new_zeros((), dtype=torch.float64)
            self._tols[key] = (var * tol).reshape(1).to(torch.float64)
        return self._tols[key]

    def inverse_at(self, positions: torch.Tensor) -> torch.Tensor:
        """``inverse[positions]``, without making the whole inverse index."""
        if self._inverse is not None:
            return self._inverse[positions.to(self._inverse.device)]
        rows = self.rows[positions.to(self.rows.device)]
        return map_rows(rows, self.colors, torch.arange(self.n_distinct, device=self.colors.device))

    def row_values(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (m,) of the distinct colors, for every opaque pixel (n,): one gather through a table of
        all colors when the inverse index is not already made (its int64 array is never built then)."""
        if self._inverse is not None:
            return values.to(self._inverse.device)[self._inverse]
        return map_rows(self.rows, self.colors, values)

    def tol(self, tol: float = TOL) -> float:
        """``tol`` for a fit on the distinct colors that equals ``tol`` relative to the pixels' variance (the
        variances computed once: choose-k fits the same data for every k)."""
        if self._tols is None:
            self._tols = {}
        if tol not in self._tols:
            self._tols[tol] = rescaled_tol(tol, self.X, weighted_variance(self.X, self.counts))
        return self._tols[tol]


#: alpha (0..255) as a fourth feature, on the scale of the color features' lightness
_ALPHA_SCALE = {"rgb": 1.0, "lab": 100 / 255, "oklab": 1 / 255}


def color_data(
    img: LoadedImage, features: str, *, clean: str | None = None, outlier_weight: float = 0.1, alpha: bool = False
) -> ColorData:
    """The histogram of the opaque pixels of ``img`` in ``features`` ("rgb", "lab" or "oklab").

    With ``alpha`` the histogram is of (r, g, b, a) and alpha is a fourth feature (``colors`` is (m, 4)).
    """
    rows, index = opaque_rows(img)
    if alpha:
        a = img.alpha.reshape(-1, 1)
        rows = torch.cat([rows, a if index is None else a[index]], dim=1)
    outliers = w = None
    if clean is not None:
        outliers = find_outliers(img.pixels, img.opaque)
        w = outlier_weights(outliers, index, clean, outlier_weight)
    hist = color_histogram(rows, w, inverse=False)
    X = color_features(hist.colors[:, :3].contiguous(), features)
    if alpha:
        X = torch.cat([X, hist.colors[:, 3:].to(torch.float32) * _ALPHA_SCALE[features]], dim=1)
    return ColorData(img, features, hist.colors, X, hist.counts, hist.weights, rows, index, outliers, hist.inverse)


@dataclass
class ColorFit:
    """A k-means fit of a :class:`ColorData`: labels (m,) of the distinct colors, centers, inertia."""

    data: ColorData
    labels: torch.Tensor
    centers: torch.Tensor
    inertia: float
    n_iter: int
    n_clusters: int


def count_colors(image: Any, *, max_pixels: int | None = None) -> int:
    """The number of distinct colors of the opaque pixels of ``image`` (a path, an array, a tensor or a loaded
    image): the size of its exact color histogram, 0 when every pixel is transparent."""
    img, _ = as_image(image, max_pixels=max_pixels)
    if img.opaque is not None and not bool(img.opaque.any()):
        return 0
    return color_data(img, "rgb").n_distinct


def fit_colors(
    data: ColorData,
    n_clusters: int,
    *,
    n_init: int = 1,
    max_iter: int = 300,
    random_state: Any = 0,
    backend: str = "auto",
    init: Any = "k-means++",
) -> ColorFit:
    """KMeans on the distinct colors weighted by their counts (the per-pixel iterates); k is capped at the
    number of distinct colors with a non-zero weight."""
    k = min(n_clusters, int((data.weights > 0).sum()))
    km = KMeans(k, init=init, n_init=n_init, max_iter=max_iter, tol=TOL, random_state=random_state, backend=backend)
    p = fit_params(km.get_params(), data.X.shape[0])  # KMeans' checks of the parameters, with its words
    # the engine's loop as KMeans.fit runs it, with the absolute tolerance computed once per histogram (KMeans
    # would make two passes over the distinct colors for it and one for their finiteness at every fit: choose-k
    # fits the same colors for every k)
    res = _batched.fit_batched(
        data.X.unsqueeze(0),
        data.weights.to(data.X.dtype).unsqueeze(0),
        n_clusters=k,
        init=p["init"],
        n_init=p["n_init"],
        max_iter=p["max_iter"],
        tol=data.abs_tol(TOL),
        generator=resolve_generator(p["random_state"]),
        backend=p["backend"],
        algorithm=p["algorithm"],
    )
    return ColorFit(data, res.labels[0], res.centers[0], float(res.inertia[0]), int(res.n_iter[0]), k)


def fit_image_colors(
    img: LoadedImage,
    n_clusters: int,
    features: str,
    *,
    clean: str | None = None,
    outlier_weight: float = 0.1,
    **fit: Any,
) -> ColorFit:
    return fit_colors(color_data(img, features, clean=clean, outlier_weight=outlier_weight), n_clusters, **fit)


def label_stats(
    colors: torch.Tensor, labels: torch.Tensor, k: int, counts: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean color (k, d) float64 and pixel count (k,) of each label, from rows ``colors`` (m, d) that stand for
    ``counts`` pixels each.

    The mean is weighted by ``weights`` (outliers count less or not at all) unless a label has only
    zero-weight pixels; the count is the plain number of pixels.
    """
    c = colors.double()
    cnt = counts.double()
    ucnt, usum = _label_sums(labels, cnt, c, k)
    if weights is None:
        return usum / ucnt.clamp_min(1e-300).unsqueeze(1), ucnt
    wcnt, wsum = _label_sums(labels, weights.double(), c, k)
    mean = torch.where(
        (wcnt > 0).unsqueeze(1), wsum / wcnt.clamp_min(1e-300).unsqueeze(1), usum / ucnt.clamp_min(1e-300).unsqueeze(1)
    )
    return mean, ucnt


def _label_sums(labels: torch.Tensor, w: torch.Tensor, c: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per label, the sum of ``w`` (m,) and of ``c * w`` ((m, d) float64): one ``bincount`` per column (on the CPU
    a sequential loop over the rows, as ``index_add_``'s, but 3.5x faster on the 12 MP photo's 960,825 colors:
    11.6 against 40.4 ms)."""
    total = torch.bincount(labels, weights=w, minlength=k)
    sums = torch.stack([torch.bincount(labels, weights=c[:, j] * w, minlength=k) for j in range(c.shape[1])], 1)
    return total, sums


def ordered_palette(
    colors: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    counts: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    merge: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Palette (p, 3) uint8 sorted by pixel count (largest first), counts (p,), and ``mapping`` (k,) from the
    fit's labels to palette indices (-1 for a label without pixels).

    Labels without pixels are dropped; with ``merge``, labels whose rounded colors are equal become one.
    """
    mean, count = label_stats(colors, labels, k, counts, weights)
    keep = torch.nonzero(count > 0).flatten()
    pal = mean[keep].round().clamp(0, 255).to(torch.uint8)
    cnt = count[keep]
    mapping = torch.full((k,), -1, dtype=torch.int64, device=pal.device)
    mapping[keep] = torch.arange(keep.numel(), device=pal.device)
    if merge:
        pal, inverse = torch.unique(pal, dim=0, return_inverse=True)
        cnt = torch.zeros(pal.shape[0], dtype=torch.float64, device=pal.device).index_add_(0, inverse, cnt)
        mapping[keep] = inverse
    order = torch.sort(-cnt, stable=True).indices  # largest first; equal counts keep a fixed order
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    mapping[keep] = rank[mapping[keep]]
    return pal[order], cnt[order], mapping


def fit_palette(fit: ColorFit, *, merge: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`ordered_palette` of a color fit; the third value is the palette index of every distinct color."""
    d = fit.data
    pal, cnt, mapping = ordered_palette(d.colors, fit.labels, fit.n_clusters, d.counts, d.weights, merge=merge)
    return pal, cnt, mapping[fit.labels]


def full_map(values: torch.Tensor, index: torch.Tensor | None, H: int, W: int, fill: int = -1) -> torch.Tensor:
    """Per-pixel (H, W) map from per-row ``values``; pixels that are not rows get ``fill``."""
    if index is None:
        return values.reshape(H, W)
    out = torch.full((H * W,), fill, dtype=values.dtype, device=values.device)
    out[index] = values
    return out.reshape(H, W)


def pixel_labels(data: ColorData, color_labels: torch.Tensor) -> torch.Tensor:
    """(H, W) int64 map of per-distinct-color labels; -1 where the image is transparent."""
    H, W, _ = data.img.pixels.shape
    return full_map(data.row_values(color_labels), data.index, H, W)


def with_alpha(rgb: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    """(H, W, 3) -> (H, W, 4) with ``alpha``; transparent pixels get RGB 0. Unchanged when alpha is None."""
    if alpha is None:
        return rgb
    rgb = torch.where((alpha > 0).unsqueeze(-1), rgb, torch.zeros_like(rgb))
    return torch.cat([rgb, alpha.unsqueeze(-1)], dim=-1)


def paint(palette: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) image of ``palette[labels]``; label -1 (transparent) paints 0."""
    if not bool((labels < 0).any()):
        return palette[labels]
    return palette[labels.clamp_min(0)] * (labels >= 0).unsqueeze(-1).to(torch.uint8)


def psnr_from_mse(mse: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def histogram_psnr(colors: torch.Tensor, counts: torch.Tensor, approx: torch.Tensor) -> float:
    """PSNR in dB of the pixels that the distinct ``colors`` (m, 3) with ``counts`` stand for, replaced by
    ``approx`` (m, 3) each: exactly the per-pixel PSNR, at the cost of the distinct colors."""
    d = (colors.to(torch.int32) - approx.to(torch.int32)).square().sum(-1).double()
    total = float(counts.double().sum())
    return psnr_from_mse(float((d * counts.double()).sum()) / (3 * total) if total else 0.0)


def image_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None, rows: int = 1 << 20) -> float:
    """PSNR in dB of two uint8 (H, W, 3) images over the pixels in ``mask``; chunked (no float image copy)."""
    fa, fb = a.reshape(-1, 3), b.reshape(-1, 3)
    fm = None if mask is None else mask.reshape(-1)
    total, count = 0.0, 0
    for s in range(0, fa.shape[0], rows):
        d = (fa[s : s + rows].to(torch.int32) - fb[s : s + rows].to(torch.int32)).square().sum(-1)
        if fm is not None:
            d = d[fm[s : s + rows]]
        total += float(d.sum(dtype=torch.float64))
        count += d.numel()
    return psnr_from_mse(total / (3 * count) if count else 0.0)


def as_pil(rgb: torch.Tensor, alpha: torch.Tensor | None) -> Image.Image:
    return LoadedImage(rgb, alpha).to_pil()


def hex_color(color: Iterable[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in color)


@dataclass
class SaveInfo:
    """What ``save`` wrote: the path, its size, and (for quantize) the size of the original it compares to."""

    path: Path
    bytes: int
    original_bytes: int | None = None
    skipped: str | None = None  # why nothing was written (a size guard), else None

    @property
    def ratio(self) -> float | None:
        """Written size / original size (below 1: the output is smaller)."""
        return None if not self.original_bytes else self.bytes / self.original_bytes


#: PNGs of at least this many pixels are written with a faster zlib level than Pillow's default 6: truecolor
#: level 1 (five times faster for a 12 MP photo, files about 15% larger); palette images level 4 (a 12 MP photo at
#: 16 colors: 0.15 s instead of 0.36 s for a file 4% larger; level 1 would be 0.11 s and 23% larger)
FAST_PNG_PIXELS = 1 << 20
_FAST_PNG_LEVEL = {"RGB": 1, "RGBA": 1, "P": 4, "L": 4}
#: palette images of at most this many entries (Pillow writes them with 1, 2 or 4 bits per pixel) and no dithering
#: are compressed with zlib's run-length strategy: smaller and faster than its default for them. Measured
#: (benchmarks/png_write.py, 2026-12-03) on the five bundled photos and the 12 MP one at 2/4/8/16 colors: 3572 KiB in
#: 0.37 s against 3904 KiB in 0.59 s at level 4 (the 12 MP photo at 16 colors 1153 KiB in 0.11 s against 1247 KiB
#: in 0.19 s); dithered, 2% larger than level 4 (kept there), and from 32 colors 10-45% larger (the 12 MP photo at
#: 256 colors: 5713 KiB against 3542)
RLE_PNG_COLORS = 16


def png_options(im: Image.Image, path: str | os.PathLike, *, runs: bool = True) -> dict[str, Any]:
    """Pillow's PNG options for writing ``im`` to ``path``: a faster zlib level for large images
    (:data:`FAST_PNG_PIXELS`), and for a palette of at most :data:`RLE_PNG_COLORS` entries zlib's run-length strategy
    unless ``runs`` is False (dithered pixels, which have few runs)."""
    if image_format(path) != "PNG":
        return {}
    opts: dict[str, Any] = {}
    if im.mode in _FAST_PNG_LEVEL and im.width * im.height >= FAST_PNG_PIXELS:
        opts["compress_level"] = _FAST_PNG_LEVEL[im.mode]
    if runs and im.mode == "P" and im.palette is not None:
        if len(im.palette.getdata()[1]) // 3 <= RLE_PNG_COLORS:  # (Pillow's own count of the entries)
            opts["compress_type"] = zlib.Z_RLE
    return opts


def save_as(
    im: Image.Image,
    path: str | os.PathLike,
    force: bool,
    original_bytes: int | None = None,
    inputs=(),
    *,
    runs: bool = True,
) -> SaveInfo:
    p = save_pil(im, path, force=force, inputs=inputs, **png_options(im, path, runs=runs))
    return SaveInfo(p, p.stat().st_size, original_bytes)
