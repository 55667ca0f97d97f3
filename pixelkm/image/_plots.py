"""Figures with matplotlib (optional: ``pip install pixelkm[plot]``).

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no GUI, no global state);
:func:`save_figure` writes one atomically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.pillow import figure_format
from ._io import atomic_write


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib, an optional extra: pip install 'pixelkm[plot]'") from None
    return Figure(figsize=(width, height), layout="constrained")


def _np(a: Any) -> np.ndarray:
    return torch.as_tensor(a).cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _show(ax, img: Any, title: str) -> None:
    ax.imshow(_np(img), interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()


def plot_quantize(result) -> Any:
    """Original and quantized image side by side."""
    fig = _figure(10, 4)
    a, b = fig.subplots(1, 2)
    _show(a, result.original, "original")
    title = f"{result.n_colors} colors{', dithered' if result.dithered else ''}, PSNR {result.psnr:.2f} dB"
    _show(b, result.image, title)
    return fig


def plot_palette(result) -> Any:
    """The palette as bars with their hex codes and shares."""
    colors = _np(result.colors) / 255.0
    props = _np(result.proportions)
    fig = _figure(7, 0.45 * len(props) + 0.8)
    ax = fig.subplots()
    y = np.arange(len(props))
    ax.barh(y, props * 100, color=colors, edgecolor="0.3")
    ax.set_yticks(y, [f"{h}" for h in result.hex], family="monospace")
    ax.invert_yaxis()
    ax.set_xlabel("share of pixels (%)")
    for yi, p in zip(y, props):
        ax.text(p * 100, yi, f" {p * 100:.1f}%", va="center")
    ax.set_xlim(0, max(props) * 118)
    ax.set_title("palette")
    return fig


def plot_choose_k(result) -> Any:
    """Inertia (elbow) and silhouette against k, with the suggested k marked."""
    fig = _figure(7, 4)
    ax = fig.subplots()
    ax.plot(result.ks, result.inertia, "o-", color="tab:blue")
    ax.set_xlabel("k")
    ax.set_ylabel("inertia", color="tab:blue")
    ax.axvline(result.suggested_k, color="0.5", ls="--", label=f"suggested k = {result.suggested_k}")
    ax2 = ax.twinx()
    sil = [math.nan if s is None else s for s in result.silhouette]
    ax2.plot(result.ks, sil, "s-", color="tab:orange")
    ax2.set_ylabel(f"silhouette ({result.sample_size} pixels)", color="tab:orange")
    ax.legend(loc="upper center")
    ax.set_title("choosing k")
    return fig


def plot_segments(result) -> Any:
    """Original, segment overlay, and segments painted with their mean colors."""
    fig = _figure(14, 4)
    a, b, c = fig.subplots(1, 3)
    _show(a, result.original, "original")
    _show(b, result.overlay, f"{result.n_segments} segments ({result.features})")
    _show(c, result.mean_image, "mean color per segment")
    return fig


def save_figure(fig: Any, path: str | os.PathLike, *, force: bool = False, dpi: int = 100) -> Path:
    """Write a figure atomically (format from the suffix: .png, .pdf, .svg, ...: the command's rule,
    :func:`pixelkm.io.pillow.figure_format`, checked before the write)."""
    fmt = figure_format(path)
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi), force=force)
