"""Read images far larger than RAM in horizontal strips, and write .npy files row block by row block.

Strip reading works without decoding the whole image for every format whose pixels are stored raw at known
file offsets: ``.npy`` (C order, shape (H, W), (H, W, C) or (n, d)), binary PPM/PGM, uncompressed TIFF (any
strip layout) and uncompressed BMP (bottom-up rows, BGR). The offsets come from Pillow's tile descriptors, so no
format is parsed by hand except .npy. Compressed formats (PNG, JPEG, compressed TIFF) are decoded whole by Pillow
and then cut into strips (Pillow decodes a tile only whole, and a PNG or JPEG is one tile); :func:`strip_readable`
tells which case a file is. Such a file is refused with :class:`~pixelkm.image.ImageTooLargeError` before it is
decoded when it is above Pillow's pixel limit (or ``max_pixels``) or when its pixels would not fit in the memory
available; a raw file of any size is read (only its header is parsed, so Pillow's decompression-bomb guard,
which is about decoding, does not apply). Reads use plain file I/O into a buffer (not mmap), so the pages read
count in the page cache, not in the process's resident memory.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._sysinfo import available_memory
from .files import TempFile, require_file

#: Pillow raw modes read directly: rawmode -> (channels, reverse channel order)
_RAW_MODES = {"L": (1, False), "RGB": (3, False), "RGBA": (4, False), "BGR": (3, True)}


@dataclass(frozen=True)
class _Tile:
    y0: int
    y1: int
    offset: int
    stride: int
    bottom_up: bool


@dataclass(frozen=True)
class ImageLayout:
    """Where the pixels of an image file are: shape (H, W, C), dtype, and raw tiles (None: decode whole)."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    tiles: tuple[_Tile, ...] | None
    reverse_channels: bool = False

    @property
    def strip_readable(self) -> bool:
        return self.tiles is not None


def _npy_layout(path: str) -> ImageLayout:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if fortran and len(shape) > 1:
        raise ValueError(f"{path}: Fortran-ordered .npy cannot be read in row strips; save it in C order")
    if len(shape) == 1:
        shape = (shape[0], 1)
    row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
    return ImageLayout(path, tuple(shape), dtype, (_Tile(0, shape[0], offset, row_bytes, False),))


def _pillow_layout(path: str, max_pixels: int | None, check: bool) -> ImageLayout:
    from .pillow import open_with_limit

    with open_with_limit(Path(path), None) as im:  # the header only: sizes are checked below
        w, h = im.size
        tiles, reverse, channels = [], False, None
        for t in im.tile:
            args = t.args if isinstance(t.args, tuple) else (t.args, 0, 1)
            rawmode, stride, orient = (tuple(args) + (0, 1))[:3]
            x0, y0, x1, y1 = t.extents
            if t.codec_name != "raw" or rawmode not in _RAW_MODES or (x0, x1) != (0, w) or orient not in (1, -1):
                tiles = None
                break
            channels, reverse = _RAW_MODES[rawmode]
            tiles.append(_Tile(y0, y1, t.offset, stride or w * channels, orient == -1))
        mode_channels = {"L": 1, "RGB": 3, "RGBA": 4}.get(im.mode)
        if mode_channels is None:
            raise ValueError(f"{path}: image mode {im.mode!r} is not supported (L, RGB or RGBA)")
        if tiles is not None and channels != mode_channels:
            tiles = None
        shape = (h, w) if mode_channels == 1 else (h, w, mode_channels)
        if tiles is None and check:
            _check_decodable(path, im.format, w, h, mode_channels, max_pixels)
    return ImageLayout(path, shape, np.dtype(np.uint8), None if tiles is None else tuple(tiles), reverse)


def _check_decodable(path: str, fmt: str | None, w: int, h: int, channels: int, max_pixels: int | None) -> None:
    """Refuse, before decoding, a compressed image that is above the pixel limit or larger than free memory."""
    from PIL import Image

    from .pillow import MAX_PIXELS_HINT, ImageTooLargeError

    hint = (
        "convert it to an uncompressed TIFF, binary PPM or .npy (for example `vips copy in.png out.tif`), "
        "which are read in strips"
    )
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if limit is not None and w * h > limit:
        raise ImageTooLargeError(
            f"{path}: a {fmt or 'compressed'} image of {w}x{h} = {w * h} pixels, above the limit of {limit} pixels "
            f"(Pillow's decompression-bomb guard); it cannot be read in strips and would be decoded whole: {hint}, "
            f"or {MAX_PIXELS_HINT}"
        )
    need, free = w * h * channels, available_memory()
    if free is not None and need > free:
        raise ImageTooLargeError(
            f"{path}: a {fmt or 'compressed'} image of {w}x{h} pixels cannot be read in strips and decoding it whole "
            f"needs {need / 2**20:,.1f} MiB, more than the {free / 2**20:,.1f} MiB of memory available: {hint}"
        )


def image_layout(path: str | os.PathLike, *, max_pixels: int | None = None, check: bool = True) -> ImageLayout:
    """Shape, dtype and raw pixel offsets of an image file (.npy or any format Pillow opens).

    With ``check``, a file that must be decoded whole is refused above ``max_pixels`` (default: Pillow's
    ``Image.MAX_IMAGE_PIXELS``) or when it would not fit in the memory available; files read in strips have no
    limit.
    """
    path = os.fspath(path)
    require_file(Path(path))
    try:
        if path.endswith(".npy"):
            return _npy_layout(path)
        return _pillow_layout(path, max_pixels, check)
    except (ValueError, OSError, SyntaxError, EOFError) as e:  # numpy's and Pillow's parsers: name the file
        raise _named(path, e) from None


def _named(path: str, e: BaseException) -> BaseException:
    """``e`` itself when its message names ``path`` (or it is about a missing file), else an error that does."""
    if path in str(e) or isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return e
    from .pillow import ImageError

    return ImageError(f"cannot read {path}: {e or type(e).__name__} (the file may be truncated or corrupt)")


def strip_readable(path: str | os.PathLike) -> bool:
    """True when :func:`read_strips` reads ``path`` strip by strip (raw pixels), False when it decodes it whole."""
    return image_layout(path, check=False).strip_readable


def _read_rows(f, layout: ImageLayout, y0: int, y1: int, out: np.ndarray) -> None:
    """Rows [y0, y1) of a raw-tiled image into ``out`` (y1 - y0, row elements), by file reads only."""
    row_bytes = out.shape[1] * out.dtype.itemsize
    view = out.view(np.uint8).reshape(out.shape[0], row_bytes)
    for t in layout.tiles:
        a, b = max(y0, t.y0), min(y1, t.y1)
        if a >= b:
            continue
        if t.stride == row_bytes and not t.bottom_up:
            f.seek(t.offset + (a - t.y0) * t.stride)
            readinto_exact(f, view[a - y0 : b - y0])
            continue
        # padded rows (BMP) or bottom-up storage: read the covering block, then place each row
        if t.bottom_up:  # file row r holds image row t.y1 - 1 - r
            first = t.y1 - b
        else:
            first = a - t.y0
        block = np.empty((b - a, t.stride), dtype=np.uint8)
        f.seek(t.offset + first * t.stride)
        readinto_exact(f, block)
        rows = block[::-1] if t.bottom_up else block
        view[a - y0 : b - y0] = rows[:, :row_bytes]


def readinto_exact(f, arr: np.ndarray) -> None:
    mv = memoryview(arr.reshape(-1))
    got = 0
    while got < mv.nbytes:
        r = f.readinto(mv[got:])
        if not r:
            raise OSError(f"{f.name}: file ends before the image data does")
        got += r


def read_strips(
    path: str | os.PathLike,
    rows: int = 256,
    *,
    layout: ImageLayout | None = None,
    max_pixels: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(y0, strip)`` over an image file, strips of ``rows`` rows of shape (h, W) or (h, W, C).

    Raw formats (see :func:`strip_readable`) are read with file reads of exactly those rows; others are decoded
    whole by Pillow first, when they are within ``max_pixels`` (default: Pillow's limit) and fit in the memory
    available (else :class:`~pixelkm.image.ImageTooLargeError`). Each strip is a fresh array.
    """
    if isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or rows < 1:
        raise ValueError(f"rows must be a positive int (rows per strip), got {rows!r}")
    layout = layout or image_layout(path, max_pixels=max_pixels)
    h = layout.shape[0]
    row_elems = int(np.prod(layout.shape[1:]))
    if layout.tiles is None:
        from .pillow import open_with_limit

        try:
            with open_with_limit(Path(layout.path), None) as im:  # the size was checked by image_layout
                whole = np.asarray(im)
        except (ValueError, OSError, SyntaxError, EOFError) as e:  # a truncated or corrupt file
            raise _named(layout.path, e) from None
        for y in range(0, h, rows):
            yield y, whole[y : y + rows].copy()
        return
    with open(layout.path, "rb", buffering=0) as f:
        for y in range(0, h, rows):
            y1 = min(h, y + rows)
            out = np.empty((y1 - y, row_elems), dtype=layout.dtype)
            _read_rows(f, layout, y, y1, out)
            strip = out.reshape((y1 - y, *layout.shape[1:]))
            if layout.reverse_channels:
                strip = np.ascontiguousarray(strip[..., ::-1])
            yield y, strip


class NpyWriter:
    """Write a C-order .npy file of known shape block by block (plain writes, no mmap), e.g. a quantized image.

    The blocks go to a temporary file beside ``path``, which becomes ``path`` at :meth:`close` once every byte is
    written (see :class:`pixelkm._files.TempFile`): an existing file is replaced only with ``force``, a file in
    ``inputs`` never, and a failure or a signal leaves nothing behind.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype, *, force: bool = False, inputs=()):
        self.path = Path(path)
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._tmp = TempFile(self.path, force=force, inputs=inputs)
        self._f = self._tmp.file
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        try:
            try:
                np.lib.format.write_array_header_1_0(self._f, header)
            except ValueError:  # header too long for format 1.0
                np.lib.format.write_array_header_2_0(self._f, header)
        except BaseException:
            self._tmp.discard()
            raise
        self._left = int(np.prod(self.shape)) * self.dtype.itemsize

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.nbytes > self._left:
            raise ValueError(f"{self.path}: more data written than its shape {self.shape} holds")
        self._f.write(memoryview(block.reshape(-1)).cast("B"))
        self._left -= block.nbytes

    def close(self) -> None:
        """Commit the file; when bytes are missing, discard it (ValueError)."""
        if self._left:
            self._tmp.discard()
            raise ValueError(f"{self.path}: {self._left} bytes of the array were never written")
        self._tmp.commit()

    def discard(self) -> None:
        """Give up: the temporary file is deleted, ``path`` untouched."""
        self._tmp.discard()

    def __enter__(self) -> NpyWriter:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.discard()
