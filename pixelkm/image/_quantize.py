"""quantize: an image reduced to k colors fitted by k-means on its exact color histogram, or mapped onto a
given palette; palette PNGs with partial transparency (RGBA palette entries, PNG tRNS)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .._validation import to_output as output
from ..io.files import require_file
from ..ops import assign_update
from ._common import (
    SaveInfo,
    check_color_features,
    check_k,
    color_data,
    fit_colors,
    fit_palette,
    full_map,
    histogram_psnr,
    image_psnr,
    paint,
    pixel_labels,
    png_options,
    save_as,
    with_alpha,
)
from ._features import color_features
from ._io import LoadedImage, as_image, atomic_write, encode_for, encoded_size

#: entries of a palette image (PNG, GIF); more colors are written as truecolor
PALETTE_LIMIT = 256


@dataclass
class QuantizeResult:
    """Result of :func:`quantize`.

    Attributes
    ----------
    palette : uint8 (k, 3)
        Fitted (or given) colors, most used first.
    labels : int64 (H, W)
        Palette index of every pixel; -1 where the image is transparent.
    image : uint8 (H, W, 3), or (H, W, 4) when the input has alpha
        The quantized image.
    shares : float64 (k,)
        Fraction of the (opaque) pixels that use each palette color.
    psnr : float
        Peak signal-to-noise ratio of the quantized image against the original, in dB (opaque pixels, RGB).
    inertia : float
        k-means inertia of the fit, in the units of ``features`` (NaN when mapped onto a given palette).
    n_outliers : int
        Pixels removed or down-weighted by ``clean`` (0 without cleaning).
    palette_alpha : uint8 (k,) or None
        Alpha of every palette entry when the input has partial transparency (alpha other than 0 and 255):
        colors and alpha levels are then fitted together, as pngquant does.
    """

    palette: Any
    shares: Any
    psnr: float
    inertia: float
    n_outliers: int
    dithered: bool
    features: str
    palette_alpha: Any = None
    _img: LoadedImage = field(default=None, repr=False)
    _as_tensor: bool = field(default=False, repr=False)
    _image: Any = field(default=None, repr=False)
    #: the per-pixel labels as given (dithering), or made on first use from the histogram: ``_by_color`` is the
    #: palette index of every distinct color of ``_data``, the pixels get theirs through one gather (a palette PNG
    #: takes uint8 indices the same way, without the int64 map: 12 MB instead of 96 MB for a 12 MP photo)
    _labels: Any = field(default=None, repr=False)
    _data: Any = field(default=None, repr=False)
    _by_color: Any = field(default=None, repr=False)
    #: files the result was made from besides the image (a palette file): never replaced by :meth:`save`
    _sources: tuple = field(default=(), repr=False)

    @property
    def labels(self) -> Any:
        """int64 (H, W): the palette index of every pixel; -1 where the image is transparent."""
        if self._labels is None:
            self._labels = output(pixel_labels(self._data, self._by_color), self._as_tensor)
        return self._labels

    def _index8(self) -> torch.Tensor:
        """uint8 (H, W) on the CPU: the palette index of every pixel, ``n_colors`` where it is transparent (a palette
        image's indices; at most :data:`PALETTE_LIMIT` entries)."""
        if self._labels is None:
            H, W = self._img.pixels.shape[:2]
            idx = self._data.row_values(self._by_color.to(torch.uint8))
            return full_map(idx, self._data.index, H, W, fill=self.n_colors).cpu()
        labels = torch.as_tensor(self.labels).cpu()
        return torch.where(labels < 0, self.n_colors, labels).to(torch.uint8)

    @property
    def image(self) -> Any:
        """The quantized image (made on first use: the command line writes the palette image directly)."""
        if self._image is None:
            img = self._img
            dev = img.pixels.device
            pal = torch.as_tensor(self.palette).to(dev)
            labels = torch.as_tensor(self.labels).to(dev)
            quant = paint(pal, labels)
            alpha = img.alpha
            if self.palette_alpha is not None:
                pa = torch.as_tensor(self.palette_alpha).to(dev)
                alpha = torch.where(labels >= 0, pa[labels.clamp_min(0)], torch.zeros_like(img.alpha))
            self._image = output(with_alpha(quant, alpha), self._as_tensor)
        return self._image

    @property
    def original(self) -> Any:
        """The input image (RGB, or RGBA when it has alpha)."""
        img = self._img
        t = img.pixels if img.alpha is None else torch.cat([img.pixels, img.alpha.unsqueeze(-1)], -1)
        return output(t, self._as_tensor)

    @property
    def n_colors(self) -> int:
        return int(self.palette.shape[0])

    @property
    def n_entries(self) -> int:
        """Palette entries the image needs: the colors, plus one transparent entry when some pixel is."""
        mask = self._img.opaque  # (the transparent pixels are those without a label)
        return self.n_colors + int(mask is not None and not bool(mask.all()))

    @property
    def is_palette_image(self) -> bool:
        """True when the image fits a palette image (at most 256 entries); else it is written as truecolor."""
        return self.n_entries <= PALETTE_LIMIT

    def to_pil(self) -> Image.Image:
        """A palette ("P") image when at most 256 entries are needed: transparent pixels use one extra, fully
        transparent entry, and partial alpha goes into the palette's alpha (PNG tRNS). More colors: RGB or
        RGBA truecolor."""
        pal = torch.as_tensor(self.palette).cpu()
        if not self.is_palette_image:
            t = torch.as_tensor(self.image).cpu()
            return LoadedImage(t[:, :, :3].contiguous(), t[:, :, 3] if t.shape[2] == 4 else None).to_pil()
        alpha = None if self.palette_alpha is None else torch.as_tensor(self.palette_alpha).cpu().tolist()
        colors = pal.reshape(-1).tolist()
        if self.n_entries > self.n_colors:  # the transparent entry
            colors += [0, 0, 0]
            alpha = (alpha if alpha is not None else [255] * pal.shape[0]) + [0]
        im = Image.fromarray(self._index8().numpy(), "L")
        im.putpalette(colors)  # "L" becomes "P", without a copy
        if alpha is not None:
            if all(a == 255 for a in alpha[:-1]):
                im.info["transparency"] = len(alpha) - 1  # one transparent entry: the plain tRNS index
            else:
                im.info["transparency"] = bytes(alpha)  # one alpha per entry (PNG tRNS)
        return im

    def save(
        self,
        path: str | os.PathLike,
        *,
        force: bool = False,
        max_bytes: int | None = None,
        skip_if_larger: bool = False,
        inputs=(),
    ) -> SaveInfo:
        """Write the quantized image (a palette PNG for .png when at most 256 entries) atomically; ``ratio``
        compares its size with the original file's (or, for an array input, with the original as PNG). The input
        image, a palette file and the files ``inputs`` are never replaced, ``force`` or not.

        With ``max_bytes`` (an output larger than that) or ``skip_if_larger`` (an output larger than the
        original) nothing is written and ``SaveInfo.skipped`` says why, as pngquant's ``--skip-if-larger``.
        """
        inputs = (self._img.path, *self._sources, *inputs)  # never over an input, force or not
        original = self._img.file_size
        if original is None:
            original = encoded_size(self._img.to_pil())
        if max_bytes is None and not skip_if_larger:
            return save_as(self.to_pil(), path, force, original, inputs, runs=not self.dithered)
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
        im = self.to_pil()
        data = encode_for(im, path, **png_options(im, path, runs=not self.dithered))  # the bytes save_as would write
        why = None
        if max_bytes is not None and len(data) > max_bytes:
            why = f"{len(data)} bytes would be more than the {max_bytes} allowed (--max-size)"
        elif skip_if_larger and len(data) > original:
            why = f"{len(data)} bytes would be larger than the original's {original} (--skip-if-larger)"
        if why is not None:
            return SaveInfo(Path(path), len(data), original, skipped=why)
        p = atomic_write(path, lambda f: f.write(data), force=force, inputs=inputs)
        return SaveInfo(p, len(data), original)

    def dither(self) -> QuantizeResult:
        """The same palette applied with Floyd-Steinberg dithering (no new fit)."""
        dev = self._img.pixels.device
        pal = torch.as_tensor(self.palette).to(dev)
        pa = None if self.palette_alpha is None else torch.as_tensor(self.palette_alpha).to(dev)
        labels = torch.as_tensor(self.labels).to(dev)
        return _quantized(
            self._img,
            self._as_tensor,
            pal,
            pa,
            labels,
            self.psnr,
            self.inertia,
            self.n_outliers,
            True,
            self.features,
            sources=self._sources,
        )


def _dither(pixels: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Floyd-Steinberg dithering of uint8 (H, W, 3) pixels with ``palette`` (k, 3), by Pillow: labels (H, W)."""
    k = palette.shape[0]
    if k > PALETTE_LIMIT:
        raise ValueError(f"dithering takes at most {PALETTE_LIMIT} colors (Pillow's palette), got {k}")
    reps = -(-256 // k)
    full = palette.cpu().repeat(reps, 1)[:256]  # entry j is palette[j % k], whatever Pillow does with the rest
    pal_img = Image.new("P", (1, 1))
    pal_img.putpalette(full.reshape(-1).tolist())
    src = Image.fromarray(pixels.cpu().numpy(), "RGB")
    idx = np.asarray(src.quantize(palette=pal_img, dither=Image.Dither.FLOYDSTEINBERG))
    return torch.from_numpy(idx.astype(np.int64) % k).to(pixels.device)


def _dither_by_alpha(
    pixels: torch.Tensor, palette: torch.Tensor, palette_alpha: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Dithered labels (H, W) where palette entries carry an alpha: every pixel keeps the alpha of its nearest entry
    (``labels``, -1 where transparent) and is dithered among the entries of that alpha only (Pillow dithers by RGB:
    over the whole palette, a pixel would take an entry of any alpha). Each alpha level is dithered in the rows and
    columns that hold its pixels; the error spreads into the pixels of other levels and stops there."""
    out = labels.clone()
    level = torch.where(labels >= 0, palette_alpha[labels.clamp_min(0)].to(torch.int16), -1)
    for a in torch.unique(palette_alpha).tolist():
        entries = torch.nonzero(palette_alpha == a).flatten()
        where = level == a
        if entries.numel() < 2 or not bool(where.any()):
            continue  # one entry of this alpha: its pixels keep it
        rows = torch.nonzero(where.any(1)).flatten()
        cols = torch.nonzero(where.any(0)).flatten()
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        box = where[y0:y1, x0:x1]
        got = entries.to(labels.device)[_dither(pixels[y0:y1, x0:x1].contiguous(), palette[entries])]
        out[y0:y1, x0:x1] = torch.where(box, got, out[y0:y1, x0:x1])
    return out


def _parse_color(c: Any, where: str) -> tuple[int, int, int]:
    if isinstance(c, dict):
        c = c.get("hex", c.get("rgb"))
    if isinstance(c, str):
        h = c.strip().removeprefix("#")
        if len(h) == 3:
            h = "".join(ch * 2 for ch in h)
        try:
            if len(h) != 6:
                raise ValueError
            return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
        except ValueError:
            raise ValueError(f"{where}: {c!r} is not a color; use '#rrggbb' or [r, g, b]") from None
    if (
        isinstance(c, (list, tuple))
        and len(c) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
    ):
        return int(c[0]), int(c[1]), int(c[2])
    raise ValueError(f"{where}: {c!r} is not a color; use '#rrggbb' or [r, g, b] with values 0..255")


def load_palette(source: Any) -> np.ndarray:
    """A palette as uint8 (p, 3): from a list of colors ("#rrggbb", "#rgb", [r, g, b]), a JSON file holding
    such a list (or ``pixelkm palette --json`` output), or an image whose distinct colors are the palette (a
    swatch; at most 256 colors)."""
    where = "palette"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = f"palette file {path}"
        require_file(path, "palette file")
        if path.suffix.lower() == ".json":
            try:
                source = json.loads(path.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{where} is not valid JSON: {e}") from None
            if isinstance(source, dict) and "colors" in source:
                source = source["colors"]
        else:
            img, _ = as_image(path)
            colors = torch.unique(
                img.pixels.reshape(-1, 3)[img.opaque.reshape(-1)]
                if img.alpha is not None
                else img.pixels.reshape(-1, 3),
                dim=0,
            )
            if colors.shape[0] > PALETTE_LIMIT:
                raise ValueError(
                    f"{where} has {colors.shape[0]} distinct colors; a palette swatch holds at most {PALETTE_LIMIT}"
                )
            return colors.numpy()
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        arr = np.asarray(torch.as_tensor(source).cpu())
        if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] < 1:
            raise ValueError(f"palette must have shape (p, 3), got {arr.shape}")
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError("palette values must be in 0..255")
        return arr.astype(np.uint8)
    if not isinstance(source, list) or not source:
        raise ValueError(f"{where} must hold a non-empty list of colors ('#rrggbb' or [r, g, b])")
    if len(source) > 65536:
        raise ValueError(f"{where} holds {len(source)} colors; at most 65536")
    return np.array([_parse_color(c, f"{where}, entry {i}") for i, c in enumerate(source)], dtype=np.uint8)


def quantize(
    image: Any,
    n_colors: int = 16,
    *,
    features: str = "rgb",
    palette: Any = None,
    dither: bool = False,
    clean: str | None = None,
    outlier_weight: float = 0.1,
    n_init: int = 1,
    max_iter: int = 300,
    random_state: Any = 0,
    device: Any = None,
    backend: str = "auto",
    max_pixels: int | None = None,
) -> QuantizeResult:
    """Reduce an image to ``n_colors`` colors fitted by k-means on its exact color histogram.

    Parameters
    ----------
    image : path, PIL image, uint8 array or tensor of shape (H, W, 3) or (H, W, 4)
    n_colors : int
        Palette size. Up to 256 palette entries (counting one transparent entry when some pixel is transparent)
        give a palette image; more colors are allowed and are written as truecolor (RGB / RGBA). Fewer colors
        come back when the image has fewer distinct colors.
    features : {"rgb", "lab", "oklab"}
        Space in which colors are clustered (and, with ``palette``, in which the nearest color is taken). The
        palette holds the mean sRGB color of each cluster.
    palette : colors, optional
        Map onto this palette instead of fitting one: an array (p, 3), a list of "#rrggbb" / [r, g, b], a JSON
        file or an image swatch (see :func:`load_palette`). ``n_colors`` is then ignored.
    dither : bool
        Floyd-Steinberg dithering with the palette (done by Pillow) instead of nearest colors.
    clean : {None, "remove", "downweight"}
        Leave out (weight 0) or down-weight (``outlier_weight``) isolated pixels of rare color; see
        :func:`pixelkm.image.find_outliers`.
    n_init, max_iter, random_state, device, backend
        As in :class:`pixelkm.KMeans`.
    max_pixels : int, optional
        Raise the decompression-bomb limit for large files (see :func:`load_image`).

    Images with partial transparency (alpha other than 0 and 255) fit colors and alpha together: every
    palette entry gets an alpha (``palette_alpha``), and a palette PNG stores them in its tRNS chunk.
    """
    n_colors = check_k(n_colors, "n_colors")
    check_color_features(features, "quantize")
    given = None if palette is None else load_palette(palette)
    if given is not None and clean is not None:
        raise ValueError("clean applies to a fitted palette; it cannot be combined with a given palette")
    img, as_t = as_image(image, max_pixels=max_pixels, device=device)
    dev = img.pixels.device
    partial = img.alpha is not None and bool(((img.alpha > 0) & (img.alpha < 255)).any())
    if partial and given is not None:
        raise ValueError("a given palette has no alpha; it cannot map an image with partial transparency")
    data = color_data(img, features, clean=clean, outlier_weight=outlier_weight, alpha=partial)
    pal_alpha = None
    if given is None:
        fit = fit_colors(data, n_colors, n_init=n_init, max_iter=max_iter, random_state=random_state, backend=backend)
        pal, _, color_labels = fit_palette(fit)
        inertia = fit.inertia
        if partial:
            pal, pal_alpha = pal[:, :3].contiguous(), pal[:, 3].contiguous()
    else:
        pal = torch.from_numpy(given).to(dev)
        res = assign_update(data.X, color_features(pal, features), backend=backend)
        color_labels = res.labels
        inertia = float((res.min_sq_dist.double() * data.counts).sum())
    approx = pal[color_labels]
    psnr = histogram_psnr(data.colors[:, :3], data.counts, approx)
    n_out = 0 if data.outliers is None else data.outliers.n_outliers
    counts = torch.zeros(pal.shape[0], dtype=torch.float64, device=dev).index_add_(0, color_labels, data.counts)
    sources = (Path(palette),) if isinstance(palette, (str, os.PathLike)) else ()
    if dither:
        labels = pixel_labels(data, color_labels)
        return _quantized(img, as_t, pal, pal_alpha, labels, psnr, inertia, n_out, dither, features, counts, sources)
    res = _quantized(img, as_t, pal, pal_alpha, None, psnr, inertia, n_out, False, features, counts, sources)
    res._data, res._by_color = data, color_labels
    return res


def _quantized(
    img: LoadedImage,
    as_t: bool,
    pal: torch.Tensor,
    pal_alpha: torch.Tensor | None,
    labels: torch.Tensor | None,
    psnr: float,
    inertia: float,
    n_outliers: int,
    dither: bool,
    features: str,
    counts: torch.Tensor | None = None,
    sources: tuple = (),
) -> QuantizeResult:
    """The result of quantizing ``img`` with palette ``pal`` and nearest-color ``labels`` (dithered on request;
    None: the caller gives the histogram's labels instead, with ``counts``)."""
    if dither:
        if pal_alpha is None:
            labels = torch.where(labels >= 0, _dither(img.pixels, pal), labels)
        else:
            labels = _dither_by_alpha(img.pixels, pal, pal_alpha, labels)
        psnr = image_psnr(paint(pal, labels), img.pixels, img.opaque)
        counts = None
    if counts is None:
        counts = torch.bincount(
            labels[labels >= 0] if img.alpha is not None else labels.reshape(-1), minlength=pal.shape[0]
        )
    counts = counts.double()
    return QuantizeResult(
        palette=output(pal, as_t),
        _labels=None if labels is None else output(labels, as_t),
        shares=output(counts / counts.sum(), as_t),
        psnr=psnr,
        inertia=inertia,
        n_outliers=n_outliers,
        dithered=dither,
        features=features,
        palette_alpha=None if pal_alpha is None else output(pal_alpha, as_t),
        _img=img,
        _as_tensor=as_t,
        _sources=sources,
    )
