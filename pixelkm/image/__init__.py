"""Image toolkit: load any image, cluster its pixels, and quantize, segment, extract palettes, remove
backgrounds or choose k; plots with matplotlib (optional)."""

from ..io.pillow import ImageError, ImageTooLargeError
from ._apps import (
    BackgroundResult,
    ChooseKResult,
    PaletteResult,
    QuantizeResult,
    SaveInfo,
    SegmentResult,
    choose_k,
    elbow,
    palette,
    quantize,
    remove_background,
    segment,
    silhouette_score,
    swatch,
)
from ._clean import Outliers, find_outliers
from ._features import FEATURES, PixelFeatures, pixel_features, rgb_to_lab, rgb_to_oklab
from ._io import LoadedImage, atomic_write, load_image, save_image
from ._plots import plot_choose_k, plot_palette, plot_quantize, plot_segments, save_figure

__all__ = [
    "FEATURES",
    "BackgroundResult",
    "ChooseKResult",
    "ImageError",
    "ImageTooLargeError",
    "LoadedImage",
    "Outliers",
    "PaletteResult",
    "PixelFeatures",
    "QuantizeResult",
    "SaveInfo",
    "SegmentResult",
    "atomic_write",
    "choose_k",
    "elbow",
    "find_outliers",
    "load_image",
    "palette",
    "pixel_features",
    "plot_choose_k",
    "plot_palette",
    "plot_quantize",
    "plot_segments",
    "quantize",
    "remove_background",
    "rgb_to_lab",
    "rgb_to_oklab",
    "save_figure",
    "save_image",
    "segment",
    "silhouette_score",
    "swatch",
]
