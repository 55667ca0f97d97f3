"""palette: the dominant colors of an image, near-duplicate shades merged, small distinct accents kept.

k-means (on the exact color histogram) first finds more clusters than asked (``oversample`` times k), so that
a small but distinct accent gets a cluster of its own; then the two clusters of the smallest CIEDE2000
difference merge, again and again, until k colors remain, and further while two colors are closer than
``min_delta_e``. Clusters below ``min_share`` of the pixels merge first (specks, not accents). Merging by
color difference, not by the k-means cost, is what keeps an accent: a saturated 1% of the pixels is far in
color from everything else, while two shades of one large area are close.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from .._validation import to_output as output
from ._common import SaveInfo, check_color_features, check_k, color_data, fit_colors, hex_color, label_stats, save_as
from ._features import ciede2000, rgb_to_lab
from ._io import as_image


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
    min_delta_e : float
        Smallest CIEDE2000 difference between two colors of the palette (inf for one color).
    """

    colors: Any
    hex: list[str]
    proportions: Any
    swatch: np.ndarray = field(repr=False)
    features: str = "rgb"
    min_delta_e: float = float("inf")
    #: the input file (None for arrays): never replaced by :meth:`save`
    _source: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"colors": [{"hex", "rgb", "proportion"}, ...], ...}``."""
        cols = torch.as_tensor(self.colors).cpu().tolist()
        props = torch.as_tensor(self.proportions).cpu().tolist()
        return {
            "colors": [{"hex": h, "rgb": c, "proportion": round(p, 6)} for h, c, p in zip(self.hex, cols, props)],
            "features": self.features,
            "min_delta_e": None if self.min_delta_e == float("inf") else round(self.min_delta_e, 3),
        }

    def save(self, path: str | os.PathLike, *, force: bool = False) -> SaveInfo:
        """Write the swatch image atomically (never over the input file, ``force`` or not)."""
        return save_as(Image.fromarray(self.swatch, "RGB"), path, force, inputs=(self._source,))


#: most clusters that :func:`merge_shades` merges (``n_colors * oversample``): it keeps their (c, c) color
#: differences, 128 MiB at this size; a palette is a few dominant colors (quantize reduces to many)
MAX_MERGE = 4096


def _differences(lab: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """(c, c) float64 CIEDE2000 differences of the CIELAB colors ``lab`` (c, 3), in blocks of rows (a bounded size
    of the formula's temporaries); inf on the diagonal and for the colors not ``alive``."""
    c = lab.shape[0]
    d = torch.empty((c, c), dtype=torch.float64)
    step = max(1, (1 << 18) // c)
    for s in range(0, c, step):
        d[s : s + step] = ciede2000(lab[s : s + step, None], lab[None, :])
    d.fill_diagonal_(float("inf"))
    d[~alive] = float("inf")
    d[:, ~alive] = float("inf")
    return d


def merge_shades(
    colors: torch.Tensor, counts: torch.Tensor, n_colors: int, min_delta_e: float, min_share: float
) -> torch.Tensor:
    """Group label of each of the (c, 3) float64 sRGB cluster means with pixel ``counts`` (c,): specks below
    ``min_share`` merge into their nearest color first, then the closest pair (CIEDE2000) while more than
    ``n_colors`` groups remain or two groups are closer than ``min_delta_e``. A merged group's color is the
    count-weighted mean of its members.

    The differences are computed once; a merge recomputes the merged group's row and column only, and each group
    keeps its nearest other group (the first of equal ones), so that a merge costs O(c), not O(c^2). The
    bookkeeping is NumPy's: a reduction of a few short rows in torch costs more in thread start-up than in work."""
    c = colors.shape[0]
    group = np.arange(c)
    mean = colors.double().cpu().clone()
    cnt = counts.double().cpu().numpy().copy()
    alive = cnt > 0
    total = float(cnt.sum())
    inf = float("inf")

    def lab(m: torch.Tensor) -> torch.Tensor:
        return rgb_to_lab(m.round().clamp(0, 255).to(torch.uint8)).double()

    L = lab(mean)
    d = _differences(L, torch.from_numpy(alive)).numpy()
    near = d.argmin(1)  # each group's nearest other group (the first of equal ones) and its difference
    near_d = d[np.arange(c), near]
    n_alive = int(alive.sum())
    while n_alive > 1:
        small = alive & (cnt / total < min_share)
        if small.any():  # the smallest speck joins its nearest color
            i = int(np.argmin(np.where(small, cnt, inf)))
        else:
            i = int(np.argmin(near_d))
            if n_alive <= n_colors and near_d[i] >= min_delta_e:
                break
        a, b = i, int(near[i])
        if cnt[a] < cnt[b]:  # the larger absorbs the smaller (and keeps its group id)
            a, b = b, a
        w = cnt[a] + cnt[b]
        mean[a] = (mean[a] * cnt[a] + mean[b] * cnt[b]) / w
        cnt[a] = w
        cnt[b] = 0
        alive[b] = False
        group[group == b] = a
        n_alive -= 1
        # b leaves; a's differences are new: its row and column again, every nearest group updated from them
        L[a] = lab(mean[a : a + 1])[0]
        d[b] = inf
        d[:, b] = inf
        dead = ~alive
        dead[a] = True
        d[a] = np.where(dead, inf, ciede2000(L[a], L).numpy())
        col = d[:, a] = np.where(dead, inf, ciede2000(L, L[a]).numpy())
        closer = (col < near_d) | ((col == near_d) & (near > a))
        near = np.where(closer, a, near)
        near_d = np.where(closer, col, near_d)
        stale = alive & ((near == b) | ((near == a) & ~closer))  # their nearest left or moved away: look again
        stale[a] = True
        rows = np.flatnonzero(stale)
        near[rows] = d[rows].argmin(1)
        near_d[rows] = d[rows, near[rows]]
        near_d[b] = inf
    return torch.from_numpy(group)


def palette(
    image: Any,
    n_colors: int = 6,
    *,
    features: str = "lab",
    min_delta_e: float = 0.0,
    oversample: int = 3,
    min_share: float = 0.002,
    clean: str | None = None,
    outlier_weight: float = 0.1,
    n_init: int = 1,
    max_iter: int = 300,
    random_state: Any = 0,
    device: Any = None,
    backend: str = "auto",
    max_pixels: int | None = None,
) -> PaletteResult:
    """At most ``n_colors`` dominant colors of an image, sorted by share, with hex codes and a swatch.

    Parameters
    ----------
    n_colors : int
        Largest palette size; fewer when the image has fewer distinct colors or when ``min_delta_e`` merges.
    features : {"lab", "rgb", "oklab"}
        Space of the k-means fit (the merging always uses CIEDE2000).
    min_delta_e : float
        Merge colors closer than this CIEDE2000 difference even below ``n_colors`` (0: only to reach
        ``n_colors``; about 10 merges shades a designer would call one color).
    oversample : int
        k-means finds ``oversample * n_colors`` clusters before merging (1: plain k-means, no merging).
    min_share : float
        Clusters with less than this share of the pixels merge first (specks, not accents).
    Other parameters as in :func:`quantize`.
    """
    n_colors = check_k(n_colors, "n_colors")
    oversample = check_k(oversample, "oversample")
    check_color_features(features, "palette")
    if isinstance(min_delta_e, bool) or not isinstance(min_delta_e, (int, float)) or not min_delta_e >= 0:
        raise ValueError(f"min_delta_e must be a number >= 0, got {min_delta_e!r}")
    if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not 0 <= min_share < 1:
        raise ValueError(f"min_share must be in [0, 1), got {min_share!r}")
    img, as_t = as_image(image, max_pixels=max_pixels, device=device)
    data = color_data(img, features, clean=clean, outlier_weight=outlier_weight)
    n_merge = min(n_colors * oversample, int((data.weights > 0).sum()))  # the clusters the fit finds
    if n_merge > MAX_MERGE:
        raise ValueError(
            f"palette: {n_colors} colors need {n_merge} clusters to merge (oversample {oversample}), more than the "
            f"{MAX_MERGE} it merges; ask for at most {MAX_MERGE // oversample} colors (a palette is a few dominant "
            "colors), or quantize the image to many colors"
        )
    fit = fit_colors(
        data, n_colors * oversample, n_init=n_init, max_iter=max_iter, random_state=random_state, backend=backend
    )
    mean, count = label_stats(data.colors, fit.labels, fit.n_clusters, data.counts, data.weights)
    group = merge_shades(mean, count, n_colors, float(min_delta_e), float(min_share) if oversample > 1 else 0.0)
    labels = group.to(fit.labels.device)[fit.labels]
    gmean, gcount = label_stats(data.colors, labels, fit.n_clusters, data.counts, data.weights)
    keep = torch.nonzero(gcount > 0).flatten()
    pal = gmean[keep].round().clamp(0, 255).to(torch.uint8)
    cnt = gcount[keep]
    pal, inverse = torch.unique(pal, dim=0, return_inverse=True)  # equal rounded colors become one
    cnt = torch.zeros(pal.shape[0], dtype=torch.float64, device=pal.device).index_add_(0, inverse, cnt)
    order = torch.sort(-cnt, stable=True).indices
    pal, cnt = pal[order], cnt[order]
    props = cnt / cnt.sum()
    L = rgb_to_lab(pal.cpu())
    d = _differences(L, torch.ones(L.shape[0], dtype=torch.bool))
    return PaletteResult(
        colors=output(pal, as_t),
        hex=[hex_color(c) for c in pal.cpu().tolist()],
        proportions=output(props, as_t),
        swatch=swatch(pal, props),
        features=features,
        min_delta_e=float(d.min()) if pal.shape[0] > 1 else float("inf"),
        _source=img.path,
    )
