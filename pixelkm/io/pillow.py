"""Pillow's limits: the decompression-bomb guard, raised for one call only when the caller asks, with one error type
and one hint for every image the package opens (the image toolkit and the strip reader alike); the decode of a
whole image into uint8 arrays, and its prefetch.

:func:`prefetch` starts that decode in a background thread: Pillow's decoders release the GIL, so the command
line decodes its input while the main thread imports torch (which holds it). :func:`read_image` takes the
prefetched result when there is one for the same file, or decodes in the calling thread; either way the arrays and
the errors (type and message) are the same.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .files import require_file


class ImageError(ValueError):
    """An image that cannot be read or used: unknown format, truncated file, bad array."""


class ImageTooLargeError(ImageError):
    """An image above the pixel limit of Pillow's decompression-bomb guard (or of ``max_pixels``)."""


# Pillow's guard reads the module-global Image.MAX_IMAGE_PIXELS; raising it for one call is done under a lock.
LIMIT_LOCK = threading.Lock()
MAX_PIXELS_HINT = "pass max_pixels=N (command line: --max-pixels N) to read it if you trust the file"


def image_format(path: str | os.PathLike) -> str:
    """Pillow's format name for the suffix of ``path`` (".png" -> "PNG"); a clear error when unknown."""
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(
            f"cannot tell which image format to write from {str(path)!r}: use a suffix such as .png, .jpg, "
            ".webp, .tif, .bmp or .gif"
        )
    return fmt


#: matplotlib's format of every figure suffix the package writes (``--plot``)
FIGURE_FORMATS = {
    ".png": "png",
    ".pdf": "pdf",
    ".svg": "svg",
    ".svgz": "svgz",
    ".eps": "eps",
    ".ps": "ps",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".webp": "webp",
    ".gif": "gif",
}


def figure_format(path: str | os.PathLike) -> str:
    """matplotlib's format name for the suffix of a figure's ``path`` (".pdf" -> "pdf"); a clear error when unknown
    (checked with the other outputs, before any work)."""
    fmt = FIGURE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot tell which figure format to write from {str(path)!r}: use a suffix such as .png, .pdf or .svg"
        )
    return fmt


#: what each format keeps of an image's alpha: "partial" (any alpha), "binary" (one transparent color: GIF);
#: the others keep none
ALPHA_KINDS = {"PNG": "partial", "WEBP": "partial", "TIFF": "partial", "JPEG2000": "partial", "GIF": "binary"}
#: colors of a palette image, the most a GIF holds
PALETTE_COLORS = 256


def check_alpha(path: str | os.PathLike, fmt: str, *, transparent: bool, partial: bool = False) -> None:
    """ValueError naming the format when writing an image with transparency (``transparent``: some alpha below
    255; ``partial``: some alpha strictly between 0 and 255) to ``path`` in format ``fmt`` would lose it."""
    kind = ALPHA_KINDS.get(fmt)
    if transparent and kind is None:
        raise ValueError(
            f"cannot write {path}: the {fmt} format has no transparency and the image has transparent pixels; "
            "write a .png, .webp or .tif"
        )
    if partial and kind == "binary":
        raise ValueError(
            f"cannot write {path}: the {fmt} format has only fully transparent or opaque pixels and the image has "
            "partial transparency (alpha between 0 and 255); write a .png, .webp or .tif"
        )


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


def rgb_alpha_from_pil(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) uint8 and (H, W) uint8 alpha or None, from a PIL image of any mode."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im)
        if mode == "F":  # float images: values taken on the 0..255 scale
            g = np.clip(np.nan_to_num(a), 0, 255).round()
        else:  # 16-bit (and 32-bit integer) grayscale: 0..65535 scaled to 0..255
            g = np.clip(a.astype(np.float64), 0, 65535) / 257.0
        g = np.rint(g).astype(np.uint8)
        alpha = None
        t = im.info.get("transparency") if mode != "F" else None
        if isinstance(t, int) and not isinstance(t, bool):  # a PNG tRNS gray value, on the file's own scale
            alpha = np.where(a == t, 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2), alpha
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in im.info
    )
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"))
        return np.ascontiguousarray(rgba[:, :, :3]), np.ascontiguousarray(rgba[:, :, 3])
    if mode != "RGB":
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as e:
            raise ImageError(f"cannot convert an image of mode {mode!r} to RGB: {e}") from None
    return np.asarray(im), None


@contextlib.contextmanager
def _read_errors(path: Path):
    """Pillow's and the file system's errors while reading ``path`` as one of ours, each naming the file."""
    try:
        yield
    except UnidentifiedImageError:
        raise ImageError(f"cannot read {path}: not an image file Pillow recognizes") from None
    except PermissionError:
        raise PermissionError(f"cannot read {path}: permission denied") from None
    except (ImageError, FileNotFoundError, IsADirectoryError):
        raise
    except (OSError, SyntaxError, EOFError, ValueError, IndexError, TypeError) as e:  # Pillow's decoders raise these
        raise ImageError(
            f"cannot read {path}: {e or type(e).__name__} (the file may be truncated or corrupt)"
        ) from None


def _open_checked(path: Path, limit: int | None) -> Image.Image:
    """The image file opened (its header read), refused when missing, a folder, above ``limit`` pixels or larger
    decoded than the memory available."""
    require_file(path)
    im = open_with_limit(path, limit)
    try:
        check_size(im.width, im.height, limit, str(path))
        check_memory(im, str(path))
    except BaseException:
        im.close()
        raise
    return im


def check_image(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[int, int]:
    """Raise what :func:`read_image` raises before it decodes (no such file, a folder, no image Pillow recognizes,
    above the pixel limit or the memory available), from the file's header alone: for a command to fail in
    milliseconds, before its imports, rather than after them. Returns the (width, height) of the file's pixels."""
    path = Path(path)
    limit = pixel_limit(max_pixels)
    with _read_errors(path), _open_checked(path, limit) as im:
        return im.size


def _decode(path: Path, max_pixels: int | None) -> tuple[np.ndarray, np.ndarray | None, str]:
    limit = pixel_limit(max_pixels)
    with _read_errors(path), _open_checked(path, limit) as im:
        source_mode = im.mode
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size was checked above
            im.load()
            im = ImageOps.exif_transpose(im)
        rgb, alpha = rgb_alpha_from_pil(im)
    # writable arrays of their own (Pillow's are read-only views of its bytes): the tensors are made on them
    rgb = np.array(rgb, dtype=np.uint8, copy=True)
    return rgb, None if alpha is None else np.array(alpha, dtype=np.uint8, copy=True), source_mode


def _stamp(path: Path) -> tuple | None:
    """What identifies the file's contents for a prefetch (None: no such file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class _Prefetch:
    """One decode running in a daemon thread: its result, or the exception it raised."""

    def __init__(self, path: Path, max_pixels: int | None) -> None:
        self.key = (os.fspath(path), max_pixels, _stamp(path))
        self.result: tuple | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(path, max_pixels), name="pixelkm-decode", daemon=True)
        self.thread.start()

    def _run(self, path: Path, max_pixels: int | None) -> None:
        try:
            self.result = _decode(path, max_pixels)
        except BaseException as e:  # handed to the caller of read_image, in its thread
            self.error = e


_PENDING: list[_Prefetch] = []  # at most one
_PENDING_LOCK = threading.Lock()


def prefetch(path: str | os.PathLike, max_pixels: int | None = None) -> None:
    """Start decoding ``path`` in a background thread, for the next :func:`read_image` of the same file with the
    same ``max_pixels`` (a file changed meanwhile is read again). Replaces any prefetch not yet taken."""
    job = _Prefetch(Path(path), max_pixels)
    with _PENDING_LOCK:
        _PENDING[:] = [job]


def drop_prefetch() -> None:
    """Forget a prefetch not taken (its thread finishes on its own; the result is dropped)."""
    with _PENDING_LOCK:
        _PENDING.clear()


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Decode an image file: writable uint8 (H, W, 3) RGB and (H, W) alpha or None, and Pillow's mode of the file.

    EXIF orientation applied, first frame of an animation; ``max_pixels`` as :func:`pixel_limit` takes it. Raises
    FileNotFoundError, IsADirectoryError, PermissionError, :class:`ImageTooLargeError` or :class:`ImageError`
    (unknown format, truncated or corrupt file), each naming the file.
    """
    path = Path(path)
    key = (os.fspath(path), max_pixels, _stamp(path))
    with _PENDING_LOCK:  # taken by the read of its file only (another file read first leaves it waiting)
        job = _PENDING.pop() if _PENDING and _PENDING[0].key == key else None
    if job is not None:
        job.thread.join()
        if job.error is not None:
            raise job.error
        return job.result
    return _decode(path, max_pixels)
