"""The image workflow end to end: quantize a photograph (768x512 as it is; larger, resized, under
PIXELKM_BENCH_LARGE) to ``n_colors`` colors.

pixelkm: ``pixelkm.image.quantize(image, n_colors)`` on a uint8 (H, W, 3) array (defaults: RGB features, seeded
k-means++, n_init=1). Baseline: what a scikit-learn user writes: ``KMeans(n_colors, n_init=1)`` on all pixels as
float32, then the rounded centers painted by label. ``track_psnr`` is the quality of the result (dB, higher is
better), computed the same way for both.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from . import common


def sklearn_quantize(image: np.ndarray, n_colors: int, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans

    pixels = image.reshape(-1, 3).astype(np.float32)
    km = KMeans(n_colors, n_init=1, random_state=seed).fit(pixels)
    palette = np.clip(np.rint(km.cluster_centers_), 0, 255).astype(np.uint8)
    return palette[km.labels_].reshape(image.shape)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


class ImageQuantize:
    params: ClassVar[list] = [common.IMPLEMENTATIONS, common.grid(["native"], ["1024x1024", "4096x4096"]), [8, 64]]
    param_names: ClassVar[list] = ["impl", "size", "n_colors"]
    timeout = 900
    number = 1
    repeat = (1, 3, 30.0)
    warmup_time = 0.0

    def setup(self, impl, size, n_colors):
        common.check_impl(impl)
        name, device = common.split_impl(impl)
        self.image = common.photo(size)
        if name == "sklearn":
            self.quantize = lambda: sklearn_quantize(self.image, n_colors)
        else:
            from pixelkm.image import quantize

            def run():
                out = np.asarray(quantize(self.image, n_colors, backend=name, device=device).image)
                common.sync(impl)
                return out

            self.quantize = run
        self.quantized = self.quantize()  # warm-up, and the result that track_psnr scores

    def time_quantize(self, impl, size, n_colors):
        self.quantize()

    def peakmem_quantize(self, impl, size, n_colors):
        self.quantize()

    def track_psnr(self, impl, size, n_colors):
        return psnr(self.quantized, self.image)

    track_psnr.unit = "dB"
