"""Pillow's limits: the decompression-bomb guard, raised for one call only when the caller asks, with one error type
and one hint for every image the package opens (the image toolkit and the strip reader alike)."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

from PIL import Image


class ImageError(ValueError):
    """An image that cannot be read or used: unknown format, truncated file, bad array."""


class ImageTooLargeError(ImageError):
    """An image above the pixel limit of Pillow's decompression-bomb guard (or of ``max_pixels``)."""


# Pillow's guard reads the module-global Image.MAX_IMAGE_PIXELS; raising it for one call is done under a lock.
LIMIT_LOCK = threading.Lock()
MAX_PIXELS_HINT = "pass max_pixels=N (command line: --max-pixels N) to read it if you trust the file"


def pixel_limit(max_pixels: int | None) -> int | None:
    if max_pixels is None:
        return Image.MAX_IMAGE_PIXELS
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
    return max_pixels


def check_size(width: int, height: int, limit: int | None, what: str) -> None:
    if limit is not None and width * height > limit:
        raise ImageTooLargeError(
            f"{what} has {width * height} pixels ({width}x{height}), above the limit of {limit} pixels "
            f"(Pillow's decompression-bomb guard); {MAX_PIXELS_HINT}"
        )


def open_with_limit(path: Path, limit: int | None) -> Image.Image:
    """``Image.open`` under Pillow's decompression-bomb guard, lifted only when the caller raised the limit
    (``limit=None``: no limit, for a caller that checks the size itself before decoding)."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        if pillow_limit is not None and (limit is None or limit > pillow_limit):
            with LIMIT_LOCK:  # Pillow reads a module global: raise it for this one call only
                Image.MAX_IMAGE_PIXELS = limit
                try:
                    return Image.open(path)
                finally:
                    Image.MAX_IMAGE_PIXELS = pillow_limit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked by the caller, with our message
            return Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{path}: {e}; {MAX_PIXELS_HINT}") from None


def check_memory(im: Image.Image, what: str) -> None:
    """Refuse, before decoding, an image whose decoded pixels and their copies would not fit in the free memory
    (whatever the pixel limit says): Pillow's buffer, the RGB(A) conversion, the arrays and tensors made of it."""
    from .._sysinfo import available_memory

    bands = max(1, len(im.getbands()))
    bytes_per_band = 4 if im.mode in ("I", "F") else (2 if im.mode.startswith("I;16") else 1)
    need = im.width * im.height * (bands * bytes_per_band + 4 + 4 + 4)  # decoded, converted, array, tensor copies
    free = available_memory()
    if free is not None and need > free:
        raise ImageTooLargeError(
            f"{what}: decoding its {im.width}x{im.height} pixels needs about {need / 2**30:,.1f} GiB, more than the "
            f"{free / 2**30:,.1f} GiB of memory available (whatever max_pixels allows); use a smaller image, or "
            "convert it to an uncompressed TIFF or .npy, which pixelkm.fit_stream reads in strips"
        )
