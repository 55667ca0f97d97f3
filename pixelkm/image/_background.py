"""remove_background: find the background from the image border and cut it out (docs/image.md has the figures).

1. Backdrop model, from every pixel of a border band: a smooth surface (a quadratic in x, y per CIELAB
   channel, fitted by least squares and refitted without the pixels it explains worst) for gradients and
   vignettes, plus k-means clusters of the residuals for textures and several backdrop colors, with their
   spread. Every border color counts, however small its share.
2. Barriers: step edges steeper than the border's own texture (a step is about three times steeper at 1 pixel
   of blur than at 3, a soft shadow as steep at both) and any strong edge; gaps between barrier pieces closed.
3. Background = the pixels the backdrop model explains (or the backdrop darkened with its chroma kept: a soft
   shadow) connected to the border without crossing a barrier (scipy.ndimage.label, linear time).
4. Foreground model: k-means of what is left, away from its edges. An edge pixel joins the background when it
   is closer to the backdrop than to the foreground, or when it is shadow-like and closer to the background's
   colors around it than to the object's.
5. Clean-up: holes of the foreground filled (parts of the object close to the backdrop color), a small
   opening, and only components whose outline runs mostly along barriers kept. Optional feathered alpha.

Large images are decided at a working resolution of about ``work_pixels`` pixels; the full-resolution
mask takes that decision everywhere but in a thin band along the edge of the object, where every pixel is
decided again from its own color by the rules of step 4.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from .._validation import to_output as output
from ..estimators.kmeans import KMeans
from ..io.pillow import ImageError
from ._common import SaveInfo, check_k, color_data, fit_colors, save_as
from ._features import rgb_to_lab
from ._io import LoadedImage, as_image

#: weight of the CIELAB lightness in the distance to the background (soft shadows change mostly lightness)
SHADOW_WEIGHT = 1.0
#: a barrier edge is this many times steeper at 1 pixel of blur than at 3 (a step: 3; a ramp: 1)
STEP_RATIO = 1.6
#: an edge this steep (CIELAB units per pixel) is a barrier whatever its shape
STRONG_EDGE = 4.0
#: the least steepness (CIELAB units per pixel) of a barrier edge, whatever the border's texture: a light gray
#: object's side against a soft shadow of its own lightness differs in chroma only (~3 units over a pixel)
EDGE_FLOOR = 0.7
#: gaps between barrier pieces up to about 2/80 of the shorter side are closed (a closing of that radius)
CLOSE_FRACTION = 80
#: a border whose edges stay mostly (90%) below this (CIELAB units per pixel) is a smooth backdrop: anything
#: not walled off by a barrier edge is background there, whatever its color
SMOOTH_BACKDROP = 1.0
#: least Gaussian weight of one side's pixels around a pixel for their mean color to count (``_near_means``)
NEAR_WEIGHT = 0.02
#: default working resolution (pixels) of the decision
WORK_PIXELS = 1 << 18


@dataclass
class BackgroundResult:
    """Result of :func:`remove_background`.

    Attributes
    ----------
    image : uint8 (H, W, 4)
        RGBA: the original colors, with alpha 0 on the background (and where the input was transparent);
        with ``feather`` the alpha falls off smoothly across the edge.
    mask : bool (H, W)
        True on the kept foreground, False on the background (and on pixels that were transparent).
    n_background : int
        Pixels of the background (mask False).
    threshold : float
        Distance (CIELAB units) to the background model above which a pixel cannot be background.
    """

    image: Any
    mask: Any
    n_background: int
    threshold: float
    #: the input file (None for arrays): never replaced by :meth:`save`
    _source: Any = field(default=None, repr=False)

    def save(self, path: str | os.PathLike, *, force: bool = False, inputs=()) -> SaveInfo:
        """Write the RGBA image atomically, never over the input file or the files ``inputs``, ``force`` or not
        (use .png, .webp or .tif to keep the transparency; a format that would lose it is refused)."""
        rgba = Image.fromarray(np.asarray(torch.as_tensor(self.image).cpu()), "RGBA")
        return save_as(rgba, path, force, inputs=(self._source, *inputs))


def _poly_terms(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v], dim=-1)


class _Backdrop:
    """The background model: a quadratic surface per Lab channel plus residual clusters with their spread."""

    def __init__(self, lab: torch.Tensor, u: torch.Tensor, v: torch.Tensor, n_clusters: int, seed: Any) -> None:
        A = _poly_terms(u, v).double()
        y = lab.double()
        keep = torch.ones(y.shape[0], dtype=torch.bool)
        for _ in range(3):  # least squares, then again without the worst-explained tenth (object pixels)
            Ak = A[keep]
            coef = torch.linalg.solve(Ak.T @ Ak + 1e-9 * torch.eye(6, dtype=Ak.dtype), Ak.T @ y[keep])
            r = (y - A @ coef).norm(dim=1)
            keep = r <= torch.quantile(r[:: max(1, r.numel() // 100_000)], 0.9)
        self.coef = coef.to(torch.float32)
        res = (y - A @ coef).to(torch.float32)
        k = min(n_clusters, res.shape[0])
        km = KMeans(k, random_state=seed, n_init=1).fit(self._w(res))
        self.centers = km.cluster_centers_
        d = (self._w(res)[:, None] - self.centers[None]).norm(dim=2).min(1).values
        self.spread = float(torch.quantile(d[:: max(1, d.numel() // 100_000)], 0.9))

    @staticmethod
    def _w(lab: torch.Tensor) -> torch.Tensor:
        return lab * torch.tensor([SHADOW_WEIGHT, 1.0, 1.0], dtype=lab.dtype, device=lab.device)

    def distance(self, lab: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Distance of pixels (n, 3) at (u, v) to the model (lightness down-weighted)."""
        res = self._w(lab - _poly_terms(u, v) @ self.coef)
        return torch.cdist(res, self.centers).min(1).values

    def shadow_like(self, lab: torch.Tensor, u: torch.Tensor, v: torch.Tensor, tol: float) -> torch.Tensor:
        """Pixels that are the backdrop darkened (down to a third of its lightness) with its chroma kept."""
        ref = _poly_terms(u, v) @ self.coef
        darker = (lab[:, 0] < ref[:, 0]) & (lab[:, 0] > ref[:, 0] / 3)
        return darker & ((lab[:, 1:] - ref[:, 1:]).norm(dim=1) < tol)


def _uv(H: int, W: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    v, u = torch.meshgrid(
        torch.linspace(-1, 1, H, device=device), torch.linspace(-1, 1, W, device=device), indexing="ij"
    )
    return u.reshape(-1), v.reshape(-1)


def _band(H: int, W: int, width: int) -> torch.Tensor:
    b = torch.zeros(H, W, dtype=torch.bool)
    b[:width] = b[-width:] = True
    b[:, :width] = b[:, -width:] = True
    return b


def _edges(lab: torch.Tensor, h: int, w: int, sigma: float) -> np.ndarray:
    """Gradient magnitude (h, w), CIELAB units per pixel, of the image smoothed by a Gaussian of ``sigma``."""
    from scipy import ndimage

    img = lab.reshape(h, w, 3).numpy()
    g = np.zeros((h, w), np.float32)
    for c in range(3):
        ch = ndimage.gaussian_filter(img[:, :, c], sigma)
        g += ndimage.sobel(ch, 0) ** 2 + ndimage.sobel(ch, 1) ** 2
    return np.sqrt(g) / 8  # the Sobel kernels sum to 8: a ramp of 1 per pixel gives 1


def _decide(rgb: torch.Tensor, opaque: torch.Tensor | None, border: int, n_clusters: int, seed: Any):
    """Working-resolution decision: (mask (h, w) bool numpy, backdrop, foreground centers, threshold)."""
    from scipy import ndimage

    h, w, _ = rgb.shape
    hist = color_data(LoadedImage(rgb), "lab")  # CIELAB of the distinct colors only
    lab = hist.X[hist.inverse]
    u, v = _uv(h, w, rgb.device)
    band = _band(h, w, border).reshape(-1)
    if opaque is not None:
        band &= opaque.reshape(-1)
    if not bool(band.any()):
        raise ImageError("the image border is transparent everywhere: there is no background to find")
    bd = _Backdrop(lab[band], u[band], v[band], 2 * n_clusters, seed)
    d_bg = bd.distance(lab, u, v)
    thr = max(8.0, 2.5 * bd.spread)
    # barriers: step edges steeper than the border's own texture (a step is three times steeper at 1 pixel
    # of blur than at 3; a soft shadow or a blurred backdrop is about as steep at both), and any strong edge
    grad = _edges(lab, h, w, 1.0)
    bmask = band.reshape(h, w).numpy()
    q90, q99 = np.quantile(grad[bmask], [0.9, 0.99])
    edge_thr = max(EDGE_FLOOR, 1.5 * float(q99))
    step = (grad > edge_thr) & (grad > STEP_RATIO * _edges(lab, h, w, 3.0))
    barrier = ndimage.binary_dilation(step | (grad > max(STRONG_EDGE, 3 * edge_thr)), iterations=2)
    # gaps between barrier pieces (where an object's side meets a shadow of its own lightness) closed
    barrier |= ndimage.binary_closing(barrier, _EIGHT, iterations=max(1, round(min(h, w) / CLOSE_FRACTION)))
    shadow = bd.shadow_like(lab, u, v, 0.5 * thr)
    color_bg = ((d_bg < thr) | shadow).reshape(h, w).numpy()
    passable = ~barrier & (color_bg | (q90 < SMOOTH_BACKDROP))
    if opaque is not None:
        passable |= ~opaque.numpy()
    bg = _flood(passable)
    # foreground model: the colors of what is not background yet; edge pixels closer to the backdrop than
    # to the foreground then join the background
    inside = torch.from_numpy(~bg.reshape(-1))
    if opaque is not None:
        inside &= opaque.reshape(-1)
    core = inside & torch.from_numpy(~barrier.reshape(-1))  # away from the edges (whose colors are mixed)
    inside = core if int(core.sum()) >= n_clusters else inside & (d_bg >= thr)
    fg = None
    if int(inside.sum()) >= n_clusters:
        fg = fit_colors(_lab_data(rgb.reshape(-1, 3)[inside]), 2 * n_clusters, random_state=seed).centers
        d_fg = torch.cdist(lab, fg).min(1).values
        # an edge pixel goes to the side whose nearby colors it resembles (a soft shadow beside the object is
        # the backdrop's side, whatever the object's colors elsewhere); the global models where a side is far
        lab_img = lab.reshape(h, w, 3).numpy()
        sigma = _near_sigma(h, w)
        d_bg_near = _near_distance(lab_img, bg, sigma, d_bg.reshape(h, w).numpy())
        d_fg_near = _near_distance(lab_img, core.reshape(h, w).numpy(), sigma, d_fg.reshape(h, w).numpy())
        closer = (d_bg < d_fg).reshape(h, w).numpy() | (shadow.reshape(h, w).numpy() & (d_bg_near < d_fg_near))
        bg = _grow(bg, barrier & closer)
    return _clean_mask(~bg, barrier), bd, fg, thr


def _near_means(lab_img: np.ndarray, side: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The mean CIELAB color (h, w, 3) of the ``side`` pixels around each pixel (a Gaussian of ``sigma``
    pixels, normalized by their weight) and that weight (h, w)."""
    from scipy import ndimage

    s = side.astype(np.float32)
    weight = ndimage.gaussian_filter(s, sigma, truncate=3.0)
    sums = [ndimage.gaussian_filter(lab_img[:, :, c] * s, sigma, truncate=3.0) for c in range(3)]
    return np.stack(sums, axis=-1) / np.maximum(weight, 1e-12)[..., None], weight


def _near_distance(lab_img: np.ndarray, side: np.ndarray, sigma: float, far: np.ndarray) -> np.ndarray:
    """Per pixel, the CIELAB distance to the mean color of the ``side`` pixels around it; ``far`` where that
    side has almost no weight nearby."""
    mean, weight = _near_means(lab_img, side, sigma)
    return np.where(weight > NEAR_WEIGHT, np.linalg.norm(lab_img - mean, axis=-1), far)


def _near_sigma(h: int, w: int) -> float:
    """Radius (pixels) of the neighbourhood whose colors an edge pixel is compared with."""
    return max(2.0, min(h, w) / 80)


def _lab_data(rows: torch.Tensor):
    return color_data(LoadedImage(rows.reshape(1, -1, 3).contiguous()), "lab")


_EIGHT = np.ones((3, 3), bool)


def _flood(passable: np.ndarray) -> np.ndarray:
    """The passable pixels connected (8-neighbours) to the image border: one linear-time labelling."""
    from scipy import ndimage

    lab, _ = ndimage.label(passable, _EIGHT)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return np.isin(lab, edge[edge > 0])


def _grow(bg: np.ndarray, allowed: np.ndarray, steps: int = 8) -> np.ndarray:
    """``bg`` grown into the ``allowed`` pixels next to it, a pixel per step (across an edge's width)."""
    from scipy import ndimage

    return ndimage.binary_dilation(bg, _EIGHT, iterations=steps, mask=allowed | bg)


def _clean_mask(fg: np.ndarray, barrier: np.ndarray) -> np.ndarray:
    """Holes filled, a small opening, and only the object's parts kept: components at least 5% of the
    largest whose outline runs mostly along edges (a backdrop blob the border model missed has a soft
    outline)."""
    from scipy import ndimage

    h, w = fg.shape
    fg = ndimage.binary_fill_holes(fg)
    r = max(1, round(min(h, w) / 300))
    fg = ndimage.binary_opening(fg, _EIGHT, iterations=r)
    lab, n = ndimage.label(fg)
    if n == 0:
        return fg
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(fg, lab, idx)
    outline = fg & ~ndimage.binary_erosion(fg)
    on_edge = ndimage.mean(barrier[outline], lab[outline], idx) if outline.any() else np.ones(n)
    keep = idx[(sizes >= 0.05 * sizes.max()) & (np.nan_to_num(on_edge) >= 0.5)]
    if keep.size == 0:  # nothing looks like an object: keep the largest part
        keep = idx[[int(np.argmax(sizes))]]
    return np.isin(lab, keep)


def remove_background(
    image: Any,
    n_clusters: int = 4,
    *,
    border: int | None = None,
    feather: float = 0.0,
    work_pixels: int = WORK_PIXELS,
    random_state: Any = 0,
    device: Any = None,
    max_pixels: int | None = None,
) -> BackgroundResult:
    """Make the background transparent: the backdrop is modelled from the image border and cut out where it
    is connected to the border; see the module notes for the steps.

    Parameters
    ----------
    n_clusters : int
        Clusters of the background residuals and of the foreground colors.
    border : int, optional
        Width in pixels of the border band the backdrop is learnt from (default: 2% of the shorter side, at
        least 1).
    feather : float
        Soft edge: the alpha is the mask blurred by a Gaussian of this many pixels (0: a hard edge).
    work_pixels : int
        Pixels of the working resolution of the decision (larger images are decided downscaled, with the
        edge refined at full resolution).
    """
    n_clusters = check_k(n_clusters, "n_clusters")
    work_pixels = check_k(work_pixels, "work_pixels")
    if isinstance(feather, bool) or not isinstance(feather, (int, float)) or not 0 <= feather <= 1000:
        raise ValueError(f"feather must be a number of pixels in [0, 1000], got {feather!r}")
    img, as_t = as_image(image, max_pixels=max_pixels, device=device)
    H, W, _ = img.pixels.shape
    if border is None:
        border = max(1, min(H, W) // 50)
    if isinstance(border, bool) or not isinstance(border, int) or border < 1:
        raise ValueError(f"border must be a positive number of pixels, got {border!r}")
    pixels = img.pixels.cpu()
    opaque = None if img.opaque is None else img.opaque.cpu()
    f = max(1, math.ceil(math.sqrt(H * W / work_pixels)))
    if f == 1:
        small, small_op = pixels, opaque
    else:
        small = torch.from_numpy(np.asarray(Image.fromarray(pixels.numpy(), "RGB").reduce(f)).copy())
        small_op = None
        if opaque is not None:  # a working pixel is opaque when its whole box is
            box = Image.fromarray(opaque.numpy().astype(np.uint8) * 255, "L").reduce(f)
            small_op = torch.from_numpy(np.asarray(box) == 255)
    mask, bd, fg, thr = _decide(
        small, small_op, max(1, min(border // f, min(small.shape[:2]) // 2)), n_clusters, random_state
    )
    mask_t = torch.from_numpy(mask)
    if f > 1:
        mask_t = _refine(pixels, small, mask_t, f, bd, fg, thr)
    if opaque is not None:
        mask_t &= opaque
    alpha = mask_t.to(torch.uint8) * 255
    if feather > 0:
        from scipy import ndimage

        alpha = torch.from_numpy(ndimage.gaussian_filter(alpha.numpy().astype(np.float32), feather))
        alpha = alpha.round().clamp(0, 255).to(torch.uint8)
    if img.alpha is not None:
        alpha = torch.minimum(alpha, img.alpha.cpu())
    rgba = torch.cat([pixels, alpha.unsqueeze(-1)], dim=-1).to(img.pixels.device)
    mask_t = mask_t.to(img.pixels.device)
    return BackgroundResult(
        image=output(rgba, as_t),
        mask=output(mask_t, as_t),
        n_background=int((~mask_t).sum()),
        threshold=thr,
        _source=img.path,
    )


def _refine(
    pixels: torch.Tensor, small: torch.Tensor, small_mask: torch.Tensor, f: int, bd: _Backdrop, fg, thr: float
) -> torch.Tensor:
    """Full-resolution mask: the working-resolution decision, decided again per pixel near the edge (as
    ``_decide`` does: against the two models, and a shadow-like pixel against the colors of each side nearby,
    taken from the working resolution)."""
    from scipy import ndimage

    H, W, _ = pixels.shape
    h, w, _ = small.shape
    m = small_mask.repeat_interleave(f, 0).repeat_interleave(f, 1)[:H, :W].contiguous()
    edge = small_mask.numpy()
    edge = ndimage.binary_dilation(edge, iterations=1) & ~ndimage.binary_erosion(edge, iterations=1)
    band = torch.from_numpy(edge).repeat_interleave(f, 0).repeat_interleave(f, 1)[:H, :W]
    idx = torch.nonzero(band.reshape(-1)).flatten()
    if idx.numel() == 0:
        return m
    lab = rgb_to_lab(pixels.reshape(-1, 3)[idx])
    u = (idx % W).to(torch.float32) / max(W - 1, 1) * 2 - 1
    v = torch.div(idx, W, rounding_mode="floor").to(torch.float32) / max(H - 1, 1) * 2 - 1
    d_bg = bd.distance(lab, u, v)
    d_fg = torch.cdist(lab, fg).min(1).values if fg is not None else torch.full_like(d_bg, 2 * thr)
    is_bg = (d_bg < d_fg) & (d_bg < thr)
    shadow = bd.shadow_like(lab, u, v, 0.5 * thr)
    if bool(shadow.any()):
        small_lab = rgb_to_lab(small.reshape(-1, 3)).reshape(h, w, 3).numpy()
        sigma = _near_sigma(h, w)
        mask = small_mask.numpy()
        sy = torch.div(idx, W, rounding_mode="floor").div(f, rounding_mode="floor").clamp_max(h - 1).numpy()
        sx = (idx % W).div(f, rounding_mode="floor").clamp_max(w - 1).numpy()
        near = []
        for side in (
            ndimage.binary_erosion(~mask, iterations=2, border_value=1),
            ndimage.binary_erosion(mask, iterations=2),
        ):
            mean, weight = _near_means(small_lab, side, sigma)
            dist = torch.from_numpy(np.linalg.norm(lab.numpy() - mean[sy, sx], axis=-1))
            near.append(torch.where(torch.from_numpy(weight[sy, sx] > NEAR_WEIGHT), dist, torch.inf))
        is_bg |= shadow & (near[0] < near[1])
    is_fg = ~is_bg
    flat = m.reshape(-1)
    flat[idx] = is_fg
    return flat.reshape(H, W)
