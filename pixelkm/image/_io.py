"""Reading images into uint8 tensors, and writing every output file atomically.

``load_image`` turns any file Pillow reads, in any mode, into a (H, W, 3) uint8 tensor plus an (H, W) alpha
channel where the file has one. ``as_image`` does the same for arrays, tensors and PIL images, so that every
application accepts the same inputs. ``atomic_write`` is the one helper behind every file the package writes.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from .._validation import check_device
from ..io.files import TempFile
from ..io.pillow import (
    ALPHA_KINDS,
    PALETTE_COLORS,
    ImageError,
    check_alpha,
    image_format,
    read_image,
    rgb_alpha_from_pil,
)
from ..io.pillow import check_size as _check_size
from ..io.pillow import pixel_limit as _pixel_limit


@dataclass
class LoadedImage:
    """An image as the toolkit uses it.

    Attributes
    ----------
    pixels : uint8 tensor of shape (H, W, 3)
        sRGB colors, EXIF orientation applied.
    alpha : uint8 tensor of shape (H, W), or None
        The alpha channel when the image has one (0 = fully transparent).
    path : Path or None
        The file it came from.
    file_size : int or None
        Size of that file in bytes.
    mode : str
        Pillow's mode of the source ("RGB", "P", "I;16", "CMYK", ...), or "array" for arrays and tensors.
    """

    pixels: torch.Tensor
    alpha: torch.Tensor | None = None
    path: Path | None = None
    file_size: int | None = None
    mode: str = "RGB"

    @property
    def opaque(self) -> torch.Tensor | None:
        """Bool (H, W): the pixels that take part in a fit (alpha > 0); None when there is no alpha."""
        return None if self.alpha is None else self.alpha > 0

    def to_pil(self) -> Image.Image:
        rgb = self.pixels.cpu().numpy()
        if self.alpha is None:
            return Image.fromarray(rgb, "RGB")
        return Image.fromarray(np.dstack([rgb, self.alpha.cpu().numpy()]), "RGBA")


def load_image(path: str | os.PathLike, *, max_pixels: int | None = None, device: Any = None) -> LoadedImage:
    """Read an image file into a :class:`LoadedImage`: uint8 (H, W, 3) pixels and an alpha channel if any.

    Any format and mode Pillow reads (PNG, JPEG, TIFF, WebP, BMP, GIF; RGB, RGBA, LA, L, P with or without
    transparency, 16-bit I;16, CMYK, ...). EXIF orientation is applied; for animations the first frame is read.

    Parameters
    ----------
    path : str or path-like
    max_pixels : int, optional
        Largest number of pixels accepted. By default Pillow's decompression-bomb limit
        (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million) applies; a larger image raises
        :class:`ImageTooLargeError` naming this option.
    device : str or torch.device, optional
        Where the tensors go (default: CPU).
    """
    path = Path(path)
    rgb, alpha, source_mode = read_image(path, max_pixels)
    device = None if device is None else check_device(device)
    pixels = torch.from_numpy(rgb)
    a = None if alpha is None else torch.from_numpy(alpha)
    if device is not None:
        pixels = pixels.to(device)
        a = None if a is None else a.to(device)
    return LoadedImage(pixels, a, path, path.stat().st_size, source_mode)


def as_image(image: Any, *, max_pixels: int | None = None, device: Any = None) -> tuple[LoadedImage, bool]:
    """Any supported image input -> (:class:`LoadedImage` on ``device``, whether outputs should be tensors).

    Accepts a path, a PIL image, a :class:`LoadedImage`, or a uint8 NumPy array / torch tensor of shape
    (H, W), (H, W, 3) or (H, W, 4) (the 4th channel is alpha). Tensors give tensor outputs on their device;
    everything else gives NumPy outputs.
    """
    if isinstance(image, LoadedImage):
        img, was_tensor = image, True
    elif isinstance(image, (str, os.PathLike)):
        img, was_tensor = load_image(image, max_pixels=max_pixels), False
    elif isinstance(image, Image.Image):
        _check_size(image.width, image.height, _pixel_limit(max_pixels), "the image")
        rgb, alpha = rgb_alpha_from_pil(ImageOps.exif_transpose(image))
        img = LoadedImage(
            torch.from_numpy(np.array(rgb, copy=True)),
            None if alpha is None else torch.from_numpy(np.array(alpha, copy=True)),
            mode=image.mode,
        )
        was_tensor = False
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        was_tensor = isinstance(image, torch.Tensor)
        if was_tensor:
            t = image
        else:
            with warnings.catch_warnings():  # read-only arrays are fine: the toolkit never writes into its input
                warnings.filterwarnings("ignore", message=".*non-writable.*")
                t = torch.from_numpy(np.ascontiguousarray(image))
        if t.dtype != torch.uint8:
            raise ImageError(
                f"image arrays must be uint8 (0..255), got {str(t.dtype).replace('torch.', '')}; "
                "convert first, e.g. (img * 255).round().astype(np.uint8) for floats in 0..1"
            )
        if t.ndim == 2:
            t = t.unsqueeze(-1).expand(-1, -1, 3)
        if t.ndim != 3 or t.shape[2] not in (3, 4) or t.shape[0] == 0 or t.shape[1] == 0:
            raise ImageError(f"image arrays must have shape (H, W), (H, W, 3) or (H, W, 4), got {tuple(image.shape)}")
        _check_size(t.shape[1], t.shape[0], _pixel_limit(max_pixels), "the image")
        alpha = t[:, :, 3] if t.shape[2] == 4 else None
        img = LoadedImage(t[:, :, :3], alpha, mode="array")
    else:
        raise TypeError(
            "image must be a path, a PIL image, or a uint8 NumPy array / torch tensor of shape (H, W, 3) or "
            f"(H, W, 4); got {type(image).__name__}"
        )
    if device is not None:
        device = check_device(device)
        img = LoadedImage(
            img.pixels.to(device),
            None if img.alpha is None else img.alpha.to(device),
            img.path,
            img.file_size,
            img.mode,
        )
    return img, was_tensor


# -- writing ------------------------------------------------------------------------------------------------


def atomic_write(
    path: str | os.PathLike, write: Callable[[io.BufferedWriter], None], *, force: bool = False, inputs=()
) -> Path:
    """Write a file through ``write(fileobj)`` atomically: a temporary file in the same folder, then a rename.

    An existing file is never replaced unless ``force`` (FileExistsError otherwise, checked again at the
    rename so that a file that appears meanwhile is not lost). The files ``inputs`` (the inputs of the job) are
    never replaced, ``force`` or not, whatever links lead to them (ValueError). When ``write`` fails, or
    SIGTERM/SIGHUP/SIGINT end the process meanwhile, nothing is left behind. Returns the path written.
    """
    with TempFile(path, force=force, inputs=inputs) as tmp:
        write(tmp.file)
        return tmp.commit()


_PALETTE_FORMATS = {"PNG", "GIF", "BMP", "TIFF"}
#: options of Pillow's writers that every output takes (WebP: lossless, as the palette and the colors reported)
_FORMAT_OPTIONS: dict[str, dict[str, Any]] = {"WEBP": {"lossless": True}}


def alpha_use(im: Image.Image) -> tuple[bool, bool]:
    """(transparent, partial) of the pixels of ``im``: some pixel has alpha below 255; some pixel has alpha strictly
    between 0 and 255 (a palette image's entries counted only where a pixel uses them)."""
    if im.mode == "P":
        t = im.info.get("transparency")
        if t is None:
            return False, False
        alpha = [255] * 256
        if isinstance(t, int):
            alpha[t] = 0
        else:
            alpha[: len(t)] = list(t)
        used = [a for a, n in zip(alpha, im.histogram()) if n]
        return any(a < 255 for a in used), any(0 < a < 255 for a in used)
    if "A" not in im.getbands():
        if "transparency" not in im.info:
            return False, False
        im = im.convert("RGBA")
    h = im.getchannel("A").histogram()
    return sum(h[:255]) > 0, sum(h[1:255]) > 0


def _exact_palette(im: Image.Image, path: Any) -> Image.Image:
    """``im`` as a palette ("P") image of exactly its colors, fully transparent pixels one transparent entry (a
    GIF's); ValueError when it has more than :data:`PALETTE_COLORS` (Pillow would quantize it again, silently)."""
    rgba = np.asarray(im.convert("RGBA"))
    H, W, _ = rgba.shape
    flat = np.ascontiguousarray(rgba).reshape(-1, 4).view(np.uint32).reshape(-1)
    clear = rgba[:, :, 3].reshape(-1) == 0
    flat = np.where(clear, np.uint32(0), flat)  # every transparent pixel the one entry (0, 0, 0, 0)
    colors, inverse = np.unique(flat, return_inverse=True)
    if colors.size > PALETTE_COLORS:
        raise ValueError(
            f"cannot write {path}: a GIF holds at most {PALETTE_COLORS} colors (one of them for transparency) and "
            f"the image has {colors.size}; write a .png, or ask for fewer colors"
        )
    entries = colors.view(np.uint8).reshape(-1, 4)
    out = Image.fromarray(inverse.reshape(H, W).astype(np.uint8), "L")
    out.putpalette(entries[:, :3].reshape(-1).tolist())  # "L" becomes "P"
    zero = np.flatnonzero(entries[:, 3] == 0)
    if zero.size:
        out.info["transparency"] = int(zero[0])
    return out


def for_format(im: Image.Image, fmt: str, path: Any = None) -> Image.Image:
    """``im`` converted where format ``fmt`` cannot hold its mode: P becomes RGB(A) outside the palette formats
    (and in TIFF when it has transparency), JPEG gets RGB, GIF gets a palette of exactly the image's colors.

    Nothing is dropped silently: ValueError naming the format when it would lose transparency (JPEG, BMP, ...) or
    partial transparency (GIF: one transparent color), or colors (GIF: at most 256)."""
    where = path if path is not None else f"a {fmt} file"
    transparent, partial = alpha_use(im)
    check_alpha(where, fmt, transparent=transparent, partial=partial)
    if fmt == "GIF":
        if im.mode in ("1", "L") or (im.mode == "P" and not isinstance(im.info.get("transparency"), bytes)):
            return im
        return _exact_palette(im, where)
    if not transparent and ALPHA_KINDS.get(fmt) is None and im.mode in ("RGBA", "LA", "PA"):
        return im.convert("RGB" if im.mode != "LA" else "L")  # an opaque alpha channel, in a format without one
    if fmt == "JPEG" and im.mode not in ("RGB", "L", "CMYK"):
        return im.convert("RGB")
    if im.mode == "P" and (fmt not in _PALETTE_FORMATS or (fmt == "TIFF" and "transparency" in im.info)):
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    return im


def save_pil(im: Image.Image, path: str | os.PathLike, *, force: bool = False, inputs=(), **options: Any) -> Path:
    """Save a PIL image atomically in the format of the path's suffix, converted where the format cannot hold its
    mode (:func:`for_format`: an error rather than lost transparency or colors; WebP is lossless). The files
    ``inputs`` are never replaced."""
    fmt = image_format(path)
    im = for_format(im, fmt, path)
    options = {**_FORMAT_OPTIONS.get(fmt, {}), **options}
    return atomic_write(path, lambda f: im.save(f, format=fmt, **options), force=force, inputs=inputs)


def encode_for(im: Image.Image, path: str | os.PathLike, **options: Any) -> bytes:
    """The bytes that :func:`save_pil` would write to ``path`` (to check a size before writing)."""
    fmt = image_format(path)
    buf = io.BytesIO()
    for_format(im, fmt, path).save(buf, format=fmt, **{**_FORMAT_OPTIONS.get(fmt, {}), **options})
    return buf.getvalue()


def save_image(image: Any, path: str | os.PathLike, *, force: bool = False, inputs=()) -> Path:
    """Save a uint8 array or tensor of shape (H, W), (H, W, 3) or (H, W, 4), or a PIL image, atomically (never over
    the files ``inputs``)."""
    if isinstance(image, Image.Image):
        return save_pil(image, path, force=force, inputs=inputs)
    t = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    if t.dtype == torch.bool:
        t = t.to(torch.uint8) * 255
    img, _ = as_image(t.cpu(), max_pixels=2**62)
    return save_pil(img.to_pil(), path, force=force, inputs=inputs)


def encoded_size(im: Image.Image, fmt: str = "PNG", **options: Any) -> int:
    """Bytes that ``im`` takes once encoded (used to compare outputs with inputs that have no file)."""
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.tell()
