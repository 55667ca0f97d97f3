"""Noise cleaning: find outlier pixels (isolated pixels whose color matches no dense color) before a fit.

A pixel is an outlier when both hold:

- its color is rare: the cell of a coarse color grid (``bins`` levels per channel) that holds it contains
  less than ``min_density`` of the image's pixels, so no dense color is near it; and
- it is isolated: some channel differs by more than ``threshold`` from the median of its 3x3 neighbourhood
  (impulse noise, dead or hot pixels, dust), so it is not part of a region.

Outliers are then removed from the fit (weight 0) or down-weighted; they are still labeled, with the
nearest fitted color, so that outputs have no holes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CLEAN_MODES = ("remove", "downweight")


@dataclass
class Outliers:
    """Outlier pixels of an image.

    Attributes
    ----------
    mask : bool tensor of shape (H, W)
        True at outliers.
    n_rare, n_isolated, n_outliers : int
        Pixels with a rare color, pixels that differ from their neighbourhood, and pixels that are both.
    """

    mask: torch.Tensor
    n_rare: int
    n_isolated: int
    n_outliers: int


def _median3x3(pixels: torch.Tensor) -> torch.Tensor:
    """Per-channel median of each pixel's 3x3 neighbourhood (edges replicated): uint8 (H, W, 3)."""
    H, W, _ = pixels.shape
    rows = max(1, (1 << 19) // W)  # one block of 27 values per pixel stays at about 56 MB
    img = pixels.permute(2, 0, 1).unsqueeze(0).to(torch.float32)  # (1, 3, H, W)
    padded = F.pad(img, (1, 1, 1, 1), mode="replicate")
    out = torch.empty_like(pixels)
    for top in range(0, H, rows):
        bottom = min(H, top + rows)
        patches = F.unfold(padded[:, :, top : bottom + 2], 3)  # (1, 3*9, (bottom-top)*W)
        med = patches.view(3, 9, -1).median(1).values  # (3, n)
        out[top:bottom] = med.t().reshape(bottom - top, W, 3).to(torch.uint8)
    return out


def find_outliers(
    pixels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    threshold: int = 64,
    min_density: float = 1e-3,
    bins: int = 8,
) -> Outliers:
    """Find isolated pixels of rare color in a uint8 (H, W, 3) image; ``mask`` limits the search (opaque pixels).

    Parameters
    ----------
    threshold : int
        Largest difference (0..255, any channel) from the 3x3 neighbourhood median of a pixel that is not
        isolated.
    min_density : float
        Share of the (selected) pixels below which a color-grid cell is rare.
    bins : int
        Levels per channel of the color grid (8 gives 512 cells of 32 x 32 x 32 values).
    """
    if not 0 <= min_density < 1:
        raise ValueError(f"min_density must be in [0, 1), got {min_density!r}")
    if not isinstance(bins, int) or not 1 <= bins <= 256:
        raise ValueError(f"bins must be an int in 1..256, got {bins!r}")
    if not 0 <= threshold <= 255:
        raise ValueError(f"threshold must be in 0..255, got {threshold!r}")
    H, W, _ = pixels.shape
    flat = pixels.reshape(-1, 3)
    width = 256 // bins if 256 % bins == 0 else -(-256 // bins)
    cell = (flat.long() // width) @ torch.tensor([bins * bins, bins, 1], device=pixels.device)
    sel = None if mask is None else mask.reshape(-1)
    counts = torch.bincount(cell if sel is None else cell[sel], minlength=bins**3)
    n = flat.shape[0] if sel is None else int(sel.sum())
    rare = counts[cell] < min_density * n
    diff = (pixels.to(torch.int16) - _median3x3(pixels).to(torch.int16)).abs().amax(-1).reshape(-1)
    isolated = diff > threshold
    if sel is not None:
        rare &= sel
        isolated &= sel
    both = rare & isolated
    return Outliers(both.reshape(H, W), int(rare.sum()), int(isolated.sum()), int(both.sum()))


def outlier_weights(outliers: Outliers, index: torch.Tensor | None, mode: str, weight: float) -> torch.Tensor:
    """Sample weights of the fitted rows (``index`` selects them): 1, or 0 / ``weight`` for outliers."""
    if mode not in CLEAN_MODES:
        raise ValueError(f"clean must be None or one of {', '.join(CLEAN_MODES)}; got {mode!r}")
    if not 0 <= weight <= 1:
        raise ValueError(f"outlier_weight must be in [0, 1], got {weight!r}")
    flags = outliers.mask.reshape(-1)
    if index is not None:
        flags = flags[index]
    low = 0.0 if mode == "remove" else float(weight)
    w = torch.where(flags, low, 1.0).to(torch.float32)
    if not bool((w > 0).any()):
        raise ValueError("every pixel is an outlier: nothing is left to fit; use a lower threshold or no cleaning")
    return w
