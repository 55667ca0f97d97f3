"""Image toolkit: load any image, cluster its pixels, and quantize, segment, extract palettes, remove
backgrounds or choose k; plots with matplotlib (optional)."""

from ..io.pillow import ImageError, ImageTooLargeError
from ..io.progress import progress
from ._background import BackgroundResult, remove_background
from ._choose_k import ChooseKResult, choose_k, elbow, silhouette_score
from ._clean import Outliers, find_outliers
from ._common import SaveInfo, count_colors
from ._features import FEATURES, PixelFeatures, ciede2000, pixel_features, rgb_to_lab, rgb_to_oklab
from ._io import LoadedImage, atomic_write, load_image, save_image
from ._palette import PaletteResult, palette, swatch
from ._plots import plot_choose_k, plot_palette, plot_quantize, plot_segments, save_figure
from ._quantize import QuantizeResult, load_palette, quantize
from ._scenes import SCENES, product_scene, scene
from ._segment import SegmentResult, distinct_colors, segment

__all__ = [
    "FEATURES",
    "SCENES",
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
    "ciede2000",
    "count_colors",
    "distinct_colors",
    "elbow",
    "find_outliers",
    "load_image",
    "load_palette",
    "palette",
    "pixel_features",
    "plot_choose_k",
    "plot_palette",
    "plot_quantize",
    "plot_segments",
    "product_scene",
    "progress",
    "quantize",
    "remove_background",
    "rgb_to_lab",
    "rgb_to_oklab",
    "save_figure",
    "save_image",
    "scene",
    "segment",
    "silhouette_score",
    "swatch",
]
