"""Pixel features for clustering: RGB, perceptual color (CIELAB, OKLab), and pixel coordinates plus color.

Every feature matrix has one row per pixel in row-major order (row ``y * W + x`` is pixel (x, y)), so that
coordinates and colors stay aligned by construction. Only the pixels selected by ``mask`` become rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Names accepted by ``features=``.
FEATURES = ("rgb", "lab", "oklab", "xyrgb", "xylab", "xyoklab")

# sRGB (D65) -> linear -> XYZ, and the D65 white point (IEC 61966-2-1, CIE 15).
_RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_D65 = (0.95047, 1.0, 1.08883)
# OKLab (Björn Ottosson, 2020): linear sRGB -> LMS -> cube root -> Lab.
_OK_M1 = (
    (0.4122214708, 0.5363325363, 0.0514459929),
    (0.2119034982, 0.6806995451, 0.1073969566),
    (0.0883024619, 0.2817188376, 0.6299787005),
)
_OK_M2 = (
    (0.2104542553, 0.7936177850, -0.0040720468),
    (1.9779984951, -2.4285922050, 0.4505937099),
    (0.0259040371, 0.7827717662, -0.8086757660),
)


def _srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 (n, 3) -> linear-light float32 (n, 3) in 0..1, through a 256-entry table."""
    v = torch.arange(256, dtype=torch.float64, device=rgb.device) / 255.0
    table = torch.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).to(torch.float32)
    return table[rgb.long()]


def _matmul(x: torch.Tensor, m: tuple) -> torch.Tensor:
    return x @ torch.tensor(m, dtype=x.dtype, device=x.device).T


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """CIELAB (D65) of uint8 sRGB colors of shape (n, 3): float32 (n, 3), L in 0..100."""
    xyz = _matmul(_srgb_to_linear(rgb), _RGB_TO_XYZ) / torch.tensor(_D65, device=rgb.device)
    eps, kappa = 216 / 24389, 24389 / 27
    f = torch.where(xyz > eps, xyz.clamp_min(0).pow(1 / 3), (kappa * xyz + 16) / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def rgb_to_oklab(rgb: torch.Tensor) -> torch.Tensor:
    """OKLab of uint8 sRGB colors of shape (n, 3): float32 (n, 3), L in 0..1."""
    lms = _matmul(_srgb_to_linear(rgb), _OK_M1)
    return _matmul(torch.sign(lms) * lms.abs().pow(1 / 3), _OK_M2)


_COLOR = {"rgb": None, "lab": rgb_to_lab, "oklab": rgb_to_oklab}


def color_features(rgb: torch.Tensor, features: str) -> torch.Tensor:
    """float32 (n, 3) features of uint8 sRGB colors (n, 3) in the color space "rgb", "lab" or "oklab"."""
    convert = _COLOR[features]
    return rgb.to(torch.float32) if convert is None else convert(rgb)


def check_features(features: str) -> str:
    if features not in FEATURES:
        raise ValueError(f"features must be one of {', '.join(FEATURES)}; got {features!r}")
    return features


@dataclass
class PixelFeatures:
    """Feature rows of the selected pixels of an image.

    Attributes
    ----------
    X : tensor of shape (n, d)
        uint8 for "rgb" (a view of the image, no copy); float32 otherwise. For "xy..." features the columns
        are x, y, then the three color values, standardized, with x and y multiplied by the spatial weight.
    index : int64 tensor of shape (n,), or None
        Row-major pixel index (``y * W + x``) of every row; None when every pixel is a row, in order.
    mean, scale : tensors of shape (d,), or None
        The standardization applied (``(raw - mean) / scale``, before the spatial weight).
    """

    X: torch.Tensor
    index: torch.Tensor | None
    mean: torch.Tensor | None = None
    scale: torch.Tensor | None = None


def _column_stats(X: torch.Tensor, rows: int = 1 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population standard deviation of every column, in float64, two chunked passes."""
    n = X.shape[0]
    total = torch.zeros(X.shape[1], dtype=torch.float64, device=X.device)
    for s in range(0, n, rows):
        total += X[s : s + rows].double().sum(0)
    mean = total / n
    sq = torch.zeros_like(total)
    for s in range(0, n, rows):
        sq += (X[s : s + rows].double() - mean).square().sum(0)
    return mean, (sq / n).sqrt()


def pixel_features(
    pixels: torch.Tensor,
    features: str = "rgb",
    *,
    mask: torch.Tensor | None = None,
    spatial_weight: float = 1.0,
    standardize: bool = True,
) -> PixelFeatures:
    """Feature rows of an image for k-means.

    Parameters
    ----------
    pixels : uint8 tensor of shape (H, W, 3)
    features : {"rgb", "lab", "oklab", "xyrgb", "xylab", "xyoklab"}
        "rgb" passes the uint8 pixels as they are; "lab" and "oklab" are perceptual color spaces in which
        Euclidean distance follows perceived difference; "xy..." adds the pixel coordinates (x = column,
        y = row) in front of the color.
    mask : bool tensor of shape (H, W), optional
        Pixels to keep (e.g. the opaque ones); by default all.
    spatial_weight : float
        Weight of x and y relative to the color columns, after standardization ("xy..." only).
    standardize : bool
        For "xy..." features, scale every column to zero mean and unit variance over the selected pixels
        (the StandardScaler recipe), computed on the pixels' device.
    """
    check_features(features)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != torch.uint8:
        raise ValueError(f"pixels must be a uint8 tensor of shape (H, W, 3), got {pixels.dtype} {tuple(pixels.shape)}")
    if not spatial_weight >= 0:
        raise ValueError(f"spatial_weight must be >= 0, got {spatial_weight!r}")
    H, W, _ = pixels.shape
    flat = pixels.reshape(H * W, 3)
    index = None
    if mask is not None:
        if tuple(mask.shape) != (H, W):
            raise ValueError(f"mask must have shape {(H, W)}, got {tuple(mask.shape)}")
        if not bool(mask.all()):
            index = torch.nonzero(mask.reshape(-1)).flatten()
            flat = flat[index]
    space = features.removeprefix("xy")
    convert = _COLOR[space]
    if not features.startswith("xy"):
        return PixelFeatures(flat if convert is None else convert(flat), index)
    color = flat.to(torch.float32) if convert is None else convert(flat)
    idx = index if index is not None else torch.arange(H * W, device=pixels.device)
    xy = torch.stack([idx % W, torch.div(idx, W, rounding_mode="floor")], dim=1).to(torch.float32)
    X = torch.cat([xy, color], dim=1)
    mean = scale = None
    if standardize:
        mean, scale = _column_stats(X)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # constant columns stay at 0
        X.sub_(mean.to(torch.float32)).div_(scale.to(torch.float32))
        mean, scale = mean.to(torch.float32), scale.to(torch.float32)
    if spatial_weight != 1.0:
        X[:, :2] *= spatial_weight
    return PixelFeatures(X, index, mean, scale)


def ciede2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 color difference of CIELAB colors (..., 3), broadcast against each other: float64 (...).

    The formula of Sharma, Wu and Dalal (2005), with k_L = k_C = k_H = 1.
    """
    a = lab1.double()
    b = lab2.double()
    L1, a1, b1 = a.unbind(-1)
    L2, a2, b2 = b.unbind(-1)
    C1 = torch.hypot(a1, b1)
    C2 = torch.hypot(a2, b2)
    Cm7 = ((C1 + C2) / 2) ** 7
    G = 0.5 * (1 - torch.sqrt(Cm7 / (Cm7 + 25.0**7)))
    a1p, a2p = (1 + G) * a1, (1 + G) * a2
    C1p, C2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1p = torch.remainder(torch.rad2deg(torch.atan2(b1, a1p)), 360)
    h2p = torch.remainder(torch.rad2deg(torch.atan2(b2, a2p)), 360)
    h1p = torch.where(C1p == 0, torch.zeros_like(h1p), h1p)
    h2p = torch.where(C2p == 0, torch.zeros_like(h2p), h2p)
    dLp = L2 - L1
    dCp = C2p - C1p
    dh = h2p - h1p
    dh = torch.where(dh > 180, dh - 360, torch.where(dh < -180, dh + 360, dh))
    zero = (C1p * C2p) == 0
    dh = torch.where(zero, torch.zeros_like(dh), dh)
    dHp = 2 * torch.sqrt(C1p * C2p) * torch.sin(torch.deg2rad(dh / 2))
    Lm = (L1 + L2) / 2
    Cmp = (C1p + C2p) / 2
    hsum = h1p + h2p
    hm = torch.where((h1p - h2p).abs() <= 180, hsum / 2, torch.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2))
    hm = torch.where(zero, hsum, hm)
    T = (
        1
        - 0.17 * torch.cos(torch.deg2rad(hm - 30))
        + 0.24 * torch.cos(torch.deg2rad(2 * hm))
        + 0.32 * torch.cos(torch.deg2rad(3 * hm + 6))
        - 0.20 * torch.cos(torch.deg2rad(4 * hm - 63))
    )
    d_theta = 30 * torch.exp(-(((hm - 275) / 25) ** 2))
    Cmp7 = Cmp**7
    Rc = 2 * torch.sqrt(Cmp7 / (Cmp7 + 25.0**7))
    Sl = 1 + 0.015 * (Lm - 50) ** 2 / torch.sqrt(20 + (Lm - 50) ** 2)
    Sc = 1 + 0.045 * Cmp
    Sh = 1 + 0.015 * Cmp * T
    Rt = -torch.sin(torch.deg2rad(2 * d_theta)) * Rc
    tl, tc, th = dLp / Sl, dCp / Sc, dHp / Sh
    return torch.sqrt(tl**2 + tc**2 + th**2 + Rt * tc * th)
