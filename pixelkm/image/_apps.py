"""The image applications: quantize, segment, palette, remove_background, choose_k.

Each takes an image (path, PIL image, uint8 NumPy array or torch tensor), fits :class:`pixelkm.KMeans` on
pixel features, and returns a small result object. Outputs follow the input: a tensor in gives tensors on
its device, anything else gives NumPy arrays. Transparent pixels (alpha 0) are left out of every fit, get
the label -1, and stay transparent in every output image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .._kmeans import KMeans
from .._validation import resolve_generator
from ._clean import Outliers, find_outliers, outlier_weights
from ._features import PixelFeatures, check_features, pixel_features
from ._io import ImageError, LoadedImage, as_image, encoded_size, output, save_pil

# -- shared steps -------------------------------------------------------------------------------------------


@dataclass
class _Fit:
    img: LoadedImage
    feats: PixelFeatures
    labels: torch.Tensor  # (n_fit,) int64, one per fitted row
    weights: torch.Tensor | None  # (n_fit,) or None
    outliers: Outliers | None
    inertia: float
    n_clusters: int


def _check_k(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _fit(
    img: LoadedImage,
    n_clusters: int,
    features: str,
    *,
    spatial_weight: float = 1.0,
    clean: str | None = None,
    outlier_weight: float = 0.1,
    n_init: int = 1,
    max_iter: int = 300,
    random_state: Any = 0,
    backend: str = "auto",
) -> _Fit:
    """Features of the opaque pixels, optional outlier weights, and one KMeans fit."""
    check_features(features)
    feats = pixel_features(img.pixels, features, mask=img.opaque, spatial_weight=spatial_weight)
    n = feats.X.shape[0]
    if n == 0:
        raise ImageError("every pixel of the image is transparent: there is nothing to cluster")
    outliers = weights = None
    if clean is not None:
        outliers = find_outliers(img.pixels, img.opaque)
        weights = outlier_weights(outliers, feats.index, clean, outlier_weight)
    n_usable = n if weights is None else int((weights > 0).sum())
    k = min(n_clusters, n_usable)  # a tiny image cannot have more clusters than pixels
    km = KMeans(k, n_init=n_init, max_iter=max_iter, random_state=random_state, backend=backend)
    km.fit(feats.X, sample_weight=weights)
    return _Fit(img, feats, km.labels_, weights, outliers, km.inertia_, k)


def _rows(t: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    flat = t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])
    return flat if index is None else flat[index]


def _label_stats(
    colors: torch.Tensor, labels: torch.Tensor, k: int, weights: torch.Tensor | None, rows: int = 1 << 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean color (k, 3) float64 and pixel count (k,) of each label; chunked, so no float copy of the image.

    The mean is weighted by ``weights`` (outliers count less or not at all) unless a label has only
    zero-weight pixels; the count is the plain number of pixels.
    """
    dev = colors.device
    wsum = torch.zeros(k, 3, dtype=torch.float64, device=dev)
    usum = torch.zeros(k, 3, dtype=torch.float64, device=dev)
    wcnt = torch.zeros(k, dtype=torch.float64, device=dev)
    ucnt = torch.zeros(k, dtype=torch.float64, device=dev)
    for s in range(0, labels.shape[0], rows):
        c = colors[s : s + rows].double()
        lab = labels[s : s + rows]
        usum.index_add_(0, lab, c)
        ucnt += torch.bincount(lab, minlength=k).double()
        if weights is not None:
            w = weights[s : s + rows].double()
            wsum.index_add_(0, lab, c * w.unsqueeze(1))
            wcnt.index_add_(0, lab, w)
    if weights is None:
        wsum, wcnt = usum, ucnt
    mean = torch.where(
        (wcnt > 0).unsqueeze(1), wsum / wcnt.clamp_min(1e-300).unsqueeze(1), usum / ucnt.clamp_min(1).unsqueeze(1)
    )
    return mean, ucnt


def _ordered_palette(fit: _Fit, *, merge: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Palette (m, 3) uint8 sorted by pixel count (largest first), counts (m,), and the relabeled fit labels.

    Labels without pixels are dropped; with ``merge``, labels whose rounded colors are equal become one.
    """
    colors = _rows(fit.img.pixels, fit.feats.index)
    mean, count = _label_stats(colors, fit.labels, fit.n_clusters, fit.weights)
    keep = torch.nonzero(count > 0).flatten()
    pal = mean[keep].round().clamp(0, 255).to(torch.uint8)
    cnt = count[keep]
    mapping = torch.full((fit.n_clusters,), -1, dtype=torch.int64, device=pal.device)
    mapping[keep] = torch.arange(keep.numel(), device=pal.device)
    if merge:
        pal, inverse = torch.unique(pal, dim=0, return_inverse=True)
        cnt = torch.zeros(pal.shape[0], dtype=torch.float64, device=pal.device).index_add_(0, inverse, cnt)
        mapping[keep] = inverse
    # largest first; equal counts keep a fixed order
    order = torch.sort(-cnt, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    mapping[keep] = rank[mapping[keep]]
    return pal[order], cnt[order], mapping[fit.labels]


def _full_map(values: torch.Tensor, index: torch.Tensor | None, H: int, W: int, fill: int = -1) -> torch.Tensor:
    """Per-pixel (H, W) map from per-row ``values``; pixels that are not rows get ``fill``."""
    if index is None:
        return values.reshape(H, W)
    out = torch.full((H * W,), fill, dtype=values.dtype, device=values.device)
    out[index] = values
    return out.reshape(H, W)


def _with_alpha(rgb: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    """(H, W, 3) -> (H, W, 4) with ``alpha``; transparent pixels get RGB 0. Unchanged when alpha is None."""
    if alpha is None:
        return rgb
    rgb = torch.where((alpha > 0).unsqueeze(-1), rgb, torch.zeros_like(rgb))
    return torch.cat([rgb, alpha.unsqueeze(-1)], dim=-1)


def _paint(palette: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) image of ``palette[labels]``; label -1 (transparent) paints 0."""
    return palette[labels.clamp_min(0)] * (labels >= 0).unsqueeze(-1).to(torch.uint8)


def _psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None, rows: int = 1 << 20) -> float:
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
    mse = total / (3 * count) if count else 0.0
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _as_pil(rgb: torch.Tensor, alpha: torch.Tensor | None) -> Image.Image:
    return LoadedImage(rgb, alpha).to_pil()


def _hex(color: Iterable[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in color)


@dataclass
class SaveInfo:
    """What ``save`` wrote: the path, its size, and (for quantize) the size of the original it compares to."""

    path: Path
    bytes: int
    original_bytes: int | None = None

    @property
    def ratio(self) -> float | None:
        """Written size / original size (below 1: the output is smaller)."""
        return None if not self.original_bytes else self.bytes / self.original_bytes


def _save(
    im: Image.Image, path: str | os.PathLike, force: bool, original_bytes: int | None = None, inputs=()
) -> SaveInfo:
    p = save_pil(im, path, force=force, inputs=inputs)
    return SaveInfo(p, p.stat().st_size, original_bytes)


# -- quantize -----------------------------------------------------------------------------------------------


@dataclass
class QuantizeResult:
    """Result of :func:`quantize`.

    Attributes
    ----------
    palette : uint8 (k, 3)
        Fitted colors, most used first (in the nearest-color mapping).
    labels : int64 (H, W)
        Palette index of every pixel; -1 where the image is transparent.
    image : uint8 (H, W, 3), or (H, W, 4) when the input has alpha
        The quantized image.
    shares : float64 (k,)
        Fraction of the (opaque) pixels that use each palette color.
    psnr : float
        Peak signal-to-noise ratio of the quantized image against the original, in dB (opaque pixels).
    inertia : float
        k-means inertia of the fit, in the units of ``features``.
    n_outliers : int
        Pixels removed or down-weighted by ``clean`` (0 without cleaning).
    """

    palette: Any
    labels: Any
    image: Any
    shares: Any
    psnr: float
    inertia: float
    n_outliers: int
    dithered: bool
    features: str
    original: Any = field(repr=False)
    _img: LoadedImage = field(repr=False)
    _as_tensor: bool = field(repr=False)

    @property
    def n_colors(self) -> int:
        return int(self.palette.shape[0])

    def to_pil(self) -> Image.Image:
        """A palette ("P") image; transparent pixels use one extra, transparent palette entry. An image with
        partial transparency (alpha other than 0 and 255) cannot be a palette image and is given as RGBA."""
        pal = torch.as_tensor(self.palette).cpu()
        labels = torch.as_tensor(self.labels).cpu()
        alpha = None if self._img.alpha is None else self._img.alpha.cpu()
        if alpha is not None and bool(((alpha > 0) & (alpha < 255)).any()):
            return _as_pil(_paint(pal, labels), alpha)
        idx = labels.clone()
        colors = pal.reshape(-1).tolist()
        im_info = {}
        if bool((labels < 0).any()):
            idx[labels < 0] = pal.shape[0]
            colors += [0, 0, 0]
            im_info["transparency"] = pal.shape[0]
        im = Image.fromarray(idx.to(torch.uint8).numpy(), "L").convert("P")
        im.putpalette(colors)
        im.info.update(im_info)
        return im

    def save(self, path: str | os.PathLike, *, force: bool = False) -> SaveInfo:
        """Write the quantized image (a palette PNG for .png) atomically; ``ratio`` compares its size with
        the original file's (or, for an array input, with the original encoded as PNG)."""
        original = self._img.file_size
        if original is None:
            original = encoded_size(self._img.to_pil())
        return _save(self.to_pil(), path, force, original, (self._img.path,))  # never over the input

    def dither(self) -> QuantizeResult:
        """The same palette applied with Floyd-Steinberg dithering (no new fit)."""
        pal = torch.as_tensor(self.palette).to(self._img.pixels.device)
        labels = torch.as_tensor(self.labels).to(self._img.pixels.device)
        return _quantized(self._img, self._as_tensor, pal, labels, self.inertia, self.n_outliers, True, self.features)


def _dither(pixels: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Floyd-Steinberg dithering of uint8 (H, W, 3) pixels with ``palette`` (k, 3), by Pillow: labels (H, W)."""
    k = palette.shape[0]
    reps = -(-256 // k)
    full = palette.cpu().repeat(reps, 1)[:256]  # entry j is palette[j % k], whatever Pillow does with the rest
    pal_img = Image.new("P", (1, 1))
    pal_img.putpalette(full.reshape(-1).tolist())
    src = Image.fromarray(pixels.cpu().numpy(), "RGB")
    idx = np.asarray(src.quantize(palette=pal_img, dither=Image.Dither.FLOYDSTEINBERG))
    return torch.from_numpy(idx.astype(np.int64) % k).to(pixels.device)


def quantize(
    image: Any,
    n_colors: int = 16,
    *,
    features: str = "rgb",
    dither: bool = False,
    clean: str | None = None,
    outlier_weight: float = 0.1,
    n_init: int = 1,
    max_iter: int = 300,
    random_state: Any = 0,
    device: Any = None,
    backend: str = "auto",
    max_pixels: int | None = None,
) -> QuantizeResult:
    """Reduce an image to ``n_colors`` colors fitted by k-means.

    Parameters
    ----------
    image : path, PIL image, uint8 array or tensor of shape (H, W, 3) or (H, W, 4)
    n_colors : int
        Palette size (at most 256; 255 when the image has transparent pixels, which take one entry in a
        palette PNG). Fewer colors come back when the image has fewer distinct colors.
    features : {"rgb", "lab", "oklab"}
        Space in which colors are clustered; "lab" and "oklab" follow perceived difference. The palette holds
        the mean sRGB color of each cluster.
    dither : bool
        Floyd-Steinberg dithering with the fitted palette (done by Pillow) instead of nearest colors.
    clean : {None, "remove", "downweight"}
        Leave out (weight 0) or down-weight (``outlier_weight``) isolated pixels of rare color; see
        :func:`pixelkm.image.find_outliers`.
    n_init, max_iter, random_state, device, backend
        As in :class:`pixelkm.KMeans`.
    max_pixels : int, optional
        Raise the decompression-bomb limit for large files (see :func:`load_image`).
    """
    n_colors = _check_k(n_colors, "n_colors")
    if n_colors > 256:
        raise ValueError(f"n_colors must be <= 256 (a palette image holds 256 colors), got {n_colors}")
    if features.startswith("xy"):
        raise ValueError(f"quantize clusters colors: features must be rgb, lab or oklab, got {features!r}")
    img, as_t = as_image(image, max_pixels=max_pixels, device=device)
    if img.alpha is not None and n_colors == 256 and bool((img.alpha == 0).any()):
        raise ValueError("an image with transparent pixels takes at most 255 colors (one palette entry is transparent)")
    fit = _fit(
        img,
        n_colors,
        features,
        clean=clean,
        outlier_weight=outlier_weight,
        n_init=n_init,
        max_iter=max_iter,
        random_state=random_state,
        backend=backend,
    )
    pal, _, labels_fit = _ordered_palette(fit, merge=True)
    H, W, _ = img.pixels.shape
    labels = _full_map(labels_fit, fit.feats.index, H, W)
    n_out = 0 if fit.outliers is None else fit.outliers.n_outliers
    return _quantized(img, as_t, pal, labels, fit.inertia, n_out, dither, features)


def _quantized(
    img: LoadedImage,
    as_t: bool,
    pal: torch.Tensor,
    labels: torch.Tensor,
    inertia: float,
    n_outliers: int,
    dither: bool,
    features: str,
) -> QuantizeResult:
    """The result of quantizing ``img`` with palette ``pal`` and nearest-color ``labels`` (dithered on request)."""
    if dither:
        labels = torch.where(labels >= 0, _dither(img.pixels, pal), labels)
    cnt = torch.bincount(labels[labels >= 0], minlength=pal.shape[0]).double()
    quant = _paint(pal, labels)
    original = img.pixels if img.alpha is None else torch.cat([img.pixels, img.alpha.unsqueeze(-1)], -1)
    return QuantizeResult(
        palette=output(pal, as_t),
        labels=output(labels, as_t),
        image=output(_with_alpha(quant, img.alpha), as_t),
        shares=output(cnt / cnt.sum(), as_t),
        psnr=_psnr(quant, img.pixels, img.opaque),
        inertia=inertia,
        n_outliers=n_outliers,
        dithered=dither,
        features=features,
        original=output(original, as_t),
        _img=img,
        _as_tensor=as_t,
    )


# -- segment ------------------------------------------------------------------------------------------------


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
    """

    labels: Any
    overlay: Any
    mean_image: Any
    sizes: Any
    mean_colors: Any
    inertia: float
    features: str
    original: Any = field(repr=False)

    @property
    def n_segments(self) -> int:
        return int(self.sizes.shape[0])

    def save(self, path: str | os.PathLike, *, force: bool = False) -> SaveInfo:
        """Write the overlay atomically."""
        t = torch.as_tensor(self.overlay).cpu()
        return _save(_as_pil(t[:, :, :3], t[:, :, 3] if t.shape[2] == 4 else None), path, force)


def segment(
    image: Any,
    n_segments: int = 8,
    *,
    features: str = "xyrgb",
    spatial_weight: float = 1.0,
    clean: str | None = None,
    outlier_weight: float = 0.1,
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
    (small). Color-only features ("rgb", "lab", "oklab") give segments that may be scattered. Other
    parameters as in :func:`quantize`.
    """
    n_segments = _check_k(n_segments, "n_segments")
    img, as_t = as_image(image, max_pixels=max_pixels, device=device)
    fit = _fit(
        img,
        n_segments,
        features,
        spatial_weight=spatial_weight,
        clean=clean,
        outlier_weight=outlier_weight,
        n_init=n_init,
        max_iter=max_iter,
        random_state=random_state,
        backend=backend,
    )
    means, sizes, labels_fit = _ordered_palette(fit, merge=False)
    H, W, _ = img.pixels.shape
    labels = _full_map(labels_fit, fit.feats.index, H, W)
    tint = _paint(distinct_colors(means.shape[0], img.pixels.device), labels)
    overlay = ((img.pixels.to(torch.int16) + tint.to(torch.int16) + 1) // 2).to(torch.uint8)
    overlay[_boundaries(labels)] = 255
    return SegmentResult(
        labels=output(labels, as_t),
        overlay=output(_with_alpha(overlay, img.alpha), as_t),
        mean_image=output(_with_alpha(_paint(means, labels), img.alpha), as_t),
        sizes=output(sizes.to(torch.int64), as_t),
        mean_colors=output(means, as_t),
        inertia=fit.inertia,
        features=features,
        original=output(img.pixels, as_t),
    )


# -- palette ------------------------------------------------------------------------------------------------


def swatch(colors: Any, shares: Any, width: int = 600, height: int = 100) -> np.ndarray:
    """A (height, width, 3) uint8 bar: one block per color, as wide as its share (left to right)."""
    colors = np.asarray(torch.as_tensor(colors).cpu(), dtype=np.uint8)
    shares = np.asarray(torch.as_tensor(shares).cpu(), dtype=np.float64)
    if width < 1 or height < 1:
        raise ValueError(f"swatch width and height must be positive, got {width}x{height}")
    edges = np.rint(np.concatenate([[0.0], np.cumsum(shares) / shares.sum()]) * width).astype(int)
    row = np.zeros((width, 3), dtype=np.uint8)
    for c, a, b in zip(colors, edges[:-1], edges[1:]):
        row[a:b] = c
    return np.ascontiguousarray(np.broadcast_to(row, (height, width, 3)))


@dataclass
class PaletteResult:
    """Result of :func:`palette`.

    Attributes
    ----------
    colors : uint8 (k, 3)
        Dominant colors, largest share first.
    hex : list of str
        The same colors as "#rrggbb".
    proportions : float64 (k,)
        Share of the (opaque) pixels of each color; they sum to 1.
    swatch : uint8 (100, 600, 3) NumPy array
        A bar of the colors, each as wide as its share.
    """

    colors: Any
    hex: list[str]
    proportions: Any
    swatch: np.ndarray = field(repr=False)
    features: str = "rgb"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"colors": [{"hex", "rgb", "proportion"}, ...]}``."""
        cols = torch.as_tensor(self.colors).cpu().tolist()
        props = torch.as_tensor(self.proportions).cpu().tolist()
        return {
            "colors": [{"hex": h, "rgb": c, "proportion": round(p, 6)} for h, c, p in zip(self.hex, cols, props)],
            "features": self.features,
        }

    def save(self, path: str | os.PathLike, *, force: bool = False) -> SaveInfo:
        """Write the swatch image atomically."""
        return _save(Image.fromarray(self.swatch, "RGB"), path, force)


def palette(
    image: Any,
    n_colors: int = 6,
    *,
    features: str = "rgb",
    clean: str | None = None,
    outlier_weight: float = 0.1,
    n_init: int = 1,
    max_iter: int = 300,
    random_state: Any = 0,
    device: Any = None,
    backend: str = "auto",
    max_pixels: int | None = None,
) -> PaletteResult:
    """The ``n_colors`` dominant colors of an image, sorted by share, with hex codes and a swatch.

    Parameters as in :func:`quantize` (``features`` "rgb", "lab" or "oklab").
    """
    n_colors = _check_k(n_colors, "n_colors")
    if features.startswith("xy"):
        raise ValueError(f"palette clusters colors: features must be rgb, lab or oklab, got {features!r}")
    img, as_t = as_image(image, max_pixels=max_pixels, device=device)
    fit = _fit(
        img,
        n_colors,
        features,
        clean=clean,
        outlier_weight=outlier_weight,
        n_init=n_init,
        max_iter=max_iter,
        random_state=random_state,
        backend=backend,
    )
    pal, cnt, _ = _ordered_palette(fit, merge=True)
    props = cnt / cnt.sum()
    return PaletteResult(
        colors=output(pal, as_t),
        hex=[_hex(c) for c in pal.cpu().tolist()],
        proportions=output(props, as_t),
        swatch=swatch(pal, props),
        features=features,
    )


# -- remove_background --------------------------------------------------------------------------------------


def _border_band(H: int, W: int, width: int, device: Any) -> torch.Tensor:
    band = torch.zeros(H, W, dtype=torch.bool, device=device)
    band[:width] = band[-width:] = True
    band[:, :width] = band[:, -width:] = True
    return band


def _connected_to(seeds: torch.Tensor, allowed: torch.Tensor, check_every: int = 16) -> torch.Tensor:
    """Pixels of ``allowed`` (H, W) reachable from ``seeds`` through ``allowed`` (8-connected), by repeated
    3x3 dilation on the device."""
    allowed_f = allowed.to(torch.float32)[None, None]
    cur = (seeds & allowed).to(torch.float32)[None, None]
    while True:
        prev = cur
        for _ in range(check_every):
            cur = F.max_pool2d(cur, 3, stride=1, padding=1) * allowed_f
        if torch.equal(cur, prev):
            return cur[0, 0] > 0


@dataclass
class BackgroundResult:
    """Result of :func:`remove_background`.

    Attributes
    ----------
    image : uint8 (H, W, 4)
        RGBA: the original colors, with alpha 0 on the background (and where the input was transparent).
    mask : bool (H, W)
        True on the kept foreground, False on the background (and on pixels that were transparent).
    labels : int64 (H, W)
        Cluster of every pixel (-1 where the input was transparent).
    background_clusters : list of int
        The clusters that were taken as background.
    n_background : int
        Pixels made transparent.
    """

    image: Any
    mask: Any
    labels: Any
    background_clusters: list[int]
    n_background: int

    def save(self, path: str | os.PathLike, *, force: bool = False) -> SaveInfo:
        """Write the RGBA image atomically (use .png or .webp to keep the transparency)."""
        t = torch.as_tensor(self.image).cpu()
        return _save(_as_pil(t[:, :, :3], t[:, :, 3]), path, force)


def remove_background(
    image: Any,
    n_clusters: int = 4,
    *,
    features: str = "lab",
    border: int | None = None,
    min_border_share: float = 0.2,
    connected: bool = True,
    n_init: int = 1,
    max_iter: int = 300,
    random_state: Any = 0,
    device: Any = None,
    backend: str = "auto",
    max_pixels: int | None = None,
) -> BackgroundResult:
    """Make transparent the color cluster(s) that dominate the image border.

    Colors are clustered into ``n_clusters``; the clusters that hold at least ``min_border_share`` of the
    pixels in a band of ``border`` pixels along the edges (default: 2% of the shorter side, at least 1), and
    always the most frequent one there, are background. With ``connected`` only background pixels joined to
    the border through background pixels are removed, so a subject that shares a background color keeps it.
    """
    n_clusters = _check_k(n_clusters, "n_clusters")
    if not 0 < min_border_share <= 1:
        raise ValueError(f"min_border_share must be in (0, 1], got {min_border_share!r}")
    img, as_t = as_image(image, max_pixels=max_pixels, device=device)
    H, W, _ = img.pixels.shape
    if border is None:
        border = max(1, min(H, W) // 50)
    if isinstance(border, bool) or not isinstance(border, int) or border < 1:
        raise ValueError(f"border must be a positive number of pixels, got {border!r}")
    fit = _fit(
        img,
        n_clusters,
        features,
        n_init=n_init,
        max_iter=max_iter,
        random_state=random_state,
        backend=backend,
    )
    labels = _full_map(fit.labels, fit.feats.index, H, W)
    band = _border_band(H, W, min(border, H, W), img.pixels.device) & (labels >= 0)
    if not bool(band.any()):
        raise ImageError("the image border is transparent everywhere: there is no background to find")
    share = torch.bincount(labels[band], minlength=fit.n_clusters).double() / int(band.sum())
    bg = (share >= min_border_share).clone()
    bg[share.argmax()] = True
    is_bg = bg[labels.clamp_min(0)] & (labels >= 0)
    if connected:
        is_bg = _connected_to(_border_band(H, W, 1, img.pixels.device), is_bg)
    alpha = img.alpha if img.alpha is not None else torch.full((H, W), 255, dtype=torch.uint8, device=labels.device)
    alpha = torch.where(is_bg, torch.zeros_like(alpha), alpha)
    rgba = torch.cat([img.pixels, alpha.unsqueeze(-1)], dim=-1)
    return BackgroundResult(
        image=output(rgba, as_t),
        mask=output(alpha > 0, as_t),
        labels=output(labels, as_t),
        background_clusters=torch.nonzero(bg).flatten().tolist(),
        n_background=int(is_bg.sum()),
    )


# -- choose_k -----------------------------------------------------------------------------------------------


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

    The silhouette is computed (with torch, on the device) on ``sample_size`` pixels drawn at random with
    ``random_state``, in the feature space of the fit, with the labels of the fit. ``fit_size`` fits every k on
    a random subset of that many pixels (default: all) to save time on large images; the inertia is then that
    of the subset.
    """
    ks = sorted({_check_k(k, "every k in ks") for k in ks})
    if not ks:
        raise ValueError("ks must hold at least one k")
    sample_size = _check_k(sample_size, "sample_size")
    img, _ = as_image(image, max_pixels=max_pixels, device=device)
    feats = pixel_features(img.pixels, features, mask=img.opaque, spatial_weight=spatial_weight)
    n = feats.X.shape[0]
    if n == 0:
        raise ImageError("every pixel of the image is transparent: there is nothing to cluster")
    gen = resolve_generator(random_state)
    X = feats.X
    if fit_size is not None and _check_k(fit_size, "fit_size") < n:
        X = X[torch.randperm(n, generator=gen)[:fit_size].to(X.device)]
        n = fit_size
    if ks[-1] > n:
        raise ValueError(f"k={ks[-1]} is more than the {n} (opaque) pixels to fit")
    sample = torch.randperm(n, generator=gen)[: min(sample_size, n)].to(X.device)
    Xs = X[sample]
    inertias, sils = [], []
    for k in _progress(ks, progress, "choose-k"):
        km = KMeans(k, n_init=n_init, max_iter=max_iter, random_state=random_state, backend=backend)
        km.fit(X)
        inertias.append(float(km.inertia_))
        sils.append(silhouette_score(Xs, km.labels_[sample]) if k > 1 else math.nan)
    valid = [(s, k) for s, k in zip(sils, ks) if not math.isnan(s)]
    sil_k = max(valid, key=lambda t: t[0])[1] if valid else None
    elbow_k = elbow(ks, inertias)
    suggested = elbow_k if len(ks) >= 3 or sil_k is None else sil_k
    return ChooseKResult(ks, inertias, sils, elbow_k, sil_k, suggested, int(sample.numel()), features)


def _progress(items: list, enabled: bool, desc: str) -> Iterable:
    """``items`` wrapped in a tqdm bar when ``enabled`` and tqdm is installed (it is optional)."""
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, leave=False, disable=None)  # disable=None: only on a terminal
