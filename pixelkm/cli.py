"""The ``pixelkm`` command: quantize, segment, palette, remove-bg, choose-k and demo.

Every output is written atomically and never over an existing file unless ``--force``; every error is one
line on stderr and a non-zero exit code (set PIXELKM_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from . import __version__

DEMO_IMAGE = "kodim23.png"


# -- argument helpers ---------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return v


#: the most values of k that choose-k tries (each is one fit)
MAX_KS = 1000


def parse_ks(text: str) -> list[int]:
    """ "2-10" (inclusive), "2-20:2" (with a step) or "2,3,5,8" -> a list of ks."""
    try:
        ks: list[int] = []
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                rng, _, step = part.partition(":")
                lo, hi = (int(v) for v in rng.split("-"))
                values = range(lo, hi + 1, int(step) if step else 1)
                if len(ks) + len(values) > MAX_KS:  # checked before the list is built: one fit per k
                    raise argparse.ArgumentTypeError(
                        f"--ks {text} asks for {len(ks) + len(values)} values of k (one fit each); give at most "
                        f"{MAX_KS}, e.g. 2-20 or 2-200:10"
                    )
                ks.extend(values)
            else:
                ks.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ks takes e.g. 2-10, 2-20:2 or 2,3,5,8; got {text!r}") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"--ks needs ks >= 1, got {text!r}")
    return sorted(set(ks))


def _common(p: argparse.ArgumentParser, *, k: int, k_help: str, features: tuple[str, ...], default_features: str):
    p.add_argument("-k", "--k", type=_positive_int, default=k, metavar="K", help=f"{k_help} (default {k})")
    p.add_argument(
        "--features",
        choices=features,
        default=default_features,
        help=f"pixel features to cluster (default {default_features})",
    )
    _engine(p)


def _engine(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default cpu)")
    g.add_argument("--backend", default="auto", help="assign-update backend: auto, torch, triton (default auto)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--n-init", type=_positive_int, default=1, help="k-means restarts, best kept (default 1)")
    g.add_argument("--max-iter", type=_positive_int, default=300, help="Lloyd iterations per restart (default 300)")
    g.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=None,
        help="read images larger than Pillow's decompression-bomb limit (about 89 million pixels)",
    )
    g.add_argument("--force", action="store_true", help="overwrite existing output files")


def _fit_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    return {
        "n_init": a.n_init,
        "max_iter": a.max_iter,
        "random_state": a.seed,
        "device": a.device,
        "backend": a.backend,
        "max_pixels": a.max_pixels,
    }


def _clean_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--clean",
        choices=("remove", "downweight"),
        default=None,
        help="leave out (remove) or down-weight isolated pixels of rare color before the fit",
    )


def _check_targets(paths: list[Path | None], force: bool, inputs: tuple = ()) -> None:
    """Fail before any work when an output exists (without --force), is an input (even with --force), is no
    regular file (a device such as /dev/full) or its folder is missing."""
    from .io.files import not_regular, refuse_inputs

    for p in paths:
        if p is None:
            continue
        if p.is_dir():
            raise IsADirectoryError(f"output {p} is a folder; give a file name")
        why = not_regular(p)
        if why:
            raise ValueError(f"cannot write the output {p}: {why}; give a file name")
        refuse_inputs(p, inputs)
        if p.exists() and not force:
            raise FileExistsError(f"{p} exists; pass --force to overwrite it")
        if not p.parent.is_dir():
            raise FileNotFoundError(f"cannot write {p}: folder {p.parent} does not exist")
    names = [p.resolve() for p in paths if p is not None]
    if len(names) != len(set(names)):
        raise ValueError("two outputs have the same path")


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def _say(a: argparse.Namespace, text: str) -> None:
    if not getattr(a, "quiet", False):
        print(text)


def _plot(a: argparse.Namespace, make: Callable[[], Any], path: Path | None) -> None:
    if path is None:
        return
    from .image import save_figure

    save_figure(make(), path, force=a.force)
    _say(a, f"wrote {path} (plot)")


# -- commands -----------------------------------------------------------------------------------------------


def cmd_quantize(a: argparse.Namespace) -> None:
    from .image import plot_quantize, quantize

    _check_targets([a.out, a.plot], a.force, (a.input,))
    r = quantize(a.input, a.k, features=a.features, dither=a.dither, clean=a.clean, **_fit_kwargs(a))
    info = r.save(a.out, force=a.force)
    _say(
        a,
        f"wrote {info.path} ({r.n_colors} colors{', dithered' if r.dithered else ''}, {_kb(info.bytes)}, "
        f"{info.ratio:.3f} x the original's {_kb(info.original_bytes)}), PSNR {r.psnr:.2f} dB"
        + (f", {r.n_outliers} outlier pixels {a.clean}d" if a.clean else ""),
    )
    _plot(a, lambda: plot_quantize(r), a.plot)


def cmd_segment(a: argparse.Namespace) -> None:
    from .image import plot_segments, save_image, segment

    _check_targets([a.out, a.mean_image, a.plot], a.force, (a.input,))
    r = segment(a.input, a.k, features=a.features, spatial_weight=a.spatial_weight, clean=a.clean, **_fit_kwargs(a))
    info = r.save(a.out, force=a.force)
    _say(a, f"wrote {info.path} ({r.n_segments} segments overlaid, {_kb(info.bytes)})")
    for i, (size, color) in enumerate(zip(r.sizes.tolist(), r.mean_colors.tolist())):
        hexc = "#" + "".join(f"{c:02x}" for c in color)
        _say(a, f"  segment {i}: {size} pixels, mean color {hexc}")
    if a.mean_image is not None:
        save_image(r.mean_image, a.mean_image, force=a.force)
        _say(a, f"wrote {a.mean_image} (segments in their mean colors)")
    _plot(a, lambda: plot_segments(r), a.plot)


def cmd_palette(a: argparse.Namespace) -> None:
    from .image import palette, plot_palette

    _check_targets([a.out, a.plot], a.force, (a.input,))
    r = palette(a.input, a.k, features=a.features, clean=a.clean, **_fit_kwargs(a))
    if a.json:
        print(json.dumps(r.to_dict(), indent=2))
    else:
        for h, c, p in zip(r.hex, r.colors.tolist(), r.proportions.tolist()):
            print(f"{h}  {100 * p:5.1f}%  rgb({c[0]}, {c[1]}, {c[2]})")
    if a.out is not None:
        info = r.save(a.out, force=a.force)
        if not a.json:
            _say(a, f"wrote {info.path} (swatch)")
    if a.json:
        a.quiet = True  # stdout holds the JSON only
    _plot(a, lambda: plot_palette(r), a.plot)


#: Pillow formats that keep an alpha channel
ALPHA_FORMATS = {"PNG", "WEBP", "TIFF", "GIF", "JPEG2000"}


def cmd_remove_bg(a: argparse.Namespace) -> None:
    from .image import remove_background, save_image

    _check_targets([a.out, a.mask], a.force, (a.input,))
    from .image._io import image_format

    if image_format(a.out) not in ALPHA_FORMATS:  # the result is its transparency: never drop it silently
        raise ValueError(
            f"{a.out}: the {image_format(a.out)} format has no transparency, which is the result of remove-bg; "
            "write a .png, .webp or .tif"
        )
    kw = _fit_kwargs(a)
    r = remove_background(
        a.input,
        a.k,
        features=a.features,
        border=a.border,
        min_border_share=a.min_border_share,
        connected=not a.not_connected,
        **kw,
    )
    info = r.save(a.out, force=a.force)
    total = r.mask.size
    _say(a, f"wrote {info.path} (RGBA, {r.n_background} of {total} pixels made transparent)")
    if a.mask is not None:
        save_image(r.mask, a.mask, force=a.force)
        _say(a, f"wrote {a.mask} (mask: white = kept)")


def cmd_choose_k(a: argparse.Namespace) -> None:
    from .image import choose_k, plot_choose_k

    _check_targets([a.plot], a.force, (a.input,))
    from .io.strips import image_layout

    shape = image_layout(a.input, check=False).shape  # the header only: k is checked before any work
    n_pixels = shape[0] * shape[1]
    if max(a.ks) > n_pixels:
        raise ValueError(f"--ks goes up to k = {max(a.ks)}, more than the {n_pixels} pixels of {a.input}")
    r = choose_k(
        a.input,
        a.ks,
        features=a.features,
        sample_size=a.sample_size,
        fit_size=a.fit_size,
        progress=not a.json,
        **_fit_kwargs(a),
    )
    if a.json:
        print(json.dumps(r.to_dict(), indent=2))
        a.quiet = True
    else:
        print(f"{'k':>4}  {'inertia':>14}  silhouette")
        for k, i, s in zip(r.ks, r.inertia, r.silhouette):
            print(f"{k:>4}  {i:>14.6g}  {s:.4f}")
        print(f"suggested k: {r.suggested_k} (elbow {r.elbow_k}, best silhouette {r.silhouette_k})")
    _plot(a, lambda: plot_choose_k(r), a.plot)


def demo_image() -> Path:
    """Path of the photograph bundled with the package (Kodak kodim23, see pixelkm/data/SOURCES.md)."""
    return Path(str(resources.files("pixelkm") / "data" / DEMO_IMAGE))


def cmd_demo(a: argparse.Namespace) -> None:
    from . import image as pim

    src = a.image if a.image is not None else demo_image()
    out = a.out
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    try:
        import matplotlib  # noqa: F401

        have_plots = True
    except ImportError:
        have_plots = False
    files = {
        "quantized": f"quantized-{a.k}colors.png",
        "dithered": f"quantized-{a.k}colors-dithered.png",
        "segments": "segments.png",
        "segments_mean": "segments-mean.png",
        "swatch": "palette.png",
        "palette_json": "palette.json",
        "background": "background-removed.png",
        "choose_k_json": "choose-k.json",
    }
    plots = {
        "plot_quantize": "plot-quantize.png",
        "plot_palette": "plot-palette.png",
        "plot_segments": "plot-segments.png",
        "plot_choose_k": "plot-choose-k.png",
    }
    if have_plots:
        files.update(plots)
    paths = {key: out / name for key, name in files.items()}
    if out.is_dir():
        _check_targets(list(paths.values()), a.force, (src,))
    out.mkdir(parents=True, exist_ok=True)
    kw = _fit_kwargs(a)
    img = pim.load_image(src, max_pixels=a.max_pixels)
    written: list[tuple[Path, str]] = []

    def write_json(key: str, data: dict) -> None:
        text = json.dumps(data, indent=2).encode() + b"\n"
        pim.atomic_write(paths[key], lambda f: f.write(text), force=a.force)

    results: dict[str, Any] = {}

    def quantize() -> None:
        r = results["quantize"] = pim.quantize(img, a.k, **kw)
        info = r.save(paths["quantized"], force=a.force)
        written.append((info.path, f"{r.n_colors} colors, PSNR {r.psnr:.2f} dB, {info.ratio:.3f} x the original size"))
        d = r.dither()
        info = d.save(paths["dithered"], force=a.force)
        written.append((info.path, f"{d.n_colors} colors, Floyd-Steinberg dithered, {info.ratio:.3f} x the original"))

    def segment() -> None:
        r = results["segment"] = pim.segment(img, 8, **kw)
        written.append((r.save(paths["segments"], force=a.force).path, f"{r.n_segments} xyrgb segments, overlay"))
        pim.save_image(r.mean_image, paths["segments_mean"], force=a.force)
        written.append((paths["segments_mean"], "segments in their mean colors"))

    def palette() -> None:
        r = results["palette"] = pim.palette(img, 6, **kw)
        written.append((r.save(paths["swatch"], force=a.force).path, "palette swatch: " + " ".join(r.hex)))
        write_json("palette_json", r.to_dict())
        written.append((paths["palette_json"], "palette: hex codes and proportions"))

    def background() -> None:
        r = pim.remove_background(img, **kw)
        info = r.save(paths["background"], force=a.force)
        written.append((info.path, f"background removed: {r.n_background} pixels transparent"))

    def choose_k() -> None:
        r = results["choose_k"] = pim.choose_k(img, range(2, 11), fit_size=100_000, **kw)
        write_json("choose_k_json", r.to_dict())
        written.append((paths["choose_k_json"], f"inertia and silhouette for k = 2..10, suggested k {r.suggested_k}"))

    def figures() -> None:
        for key, fn, res in (
            ("plot_quantize", pim.plot_quantize, "quantize"),
            ("plot_palette", pim.plot_palette, "palette"),
            ("plot_segments", pim.plot_segments, "segment"),
            ("plot_choose_k", pim.plot_choose_k, "choose_k"),
        ):
            pim.save_figure(fn(results[res]), paths[key], force=a.force)
            written.append((paths[key], "plot"))

    steps = [quantize, segment, palette, background, choose_k] + ([figures] if have_plots else [])
    from .io.progress import track

    t0 = time.perf_counter()
    try:
        for step in track(steps, True, "demo"):
            step()
    except BaseException:
        if written:  # say what the failed run left behind
            names = ", ".join(str(p) for p, _ in written)
            print(
                f"pixelkm: the demo stopped half-way; it had written {len(written)} file(s): {names}", file=sys.stderr
            )
        raise
    _say(a, f"pixelkm demo on {src} ({img.pixels.shape[1]}x{img.pixels.shape[0]}), {time.perf_counter() - t0:.1f} s:")
    for path, what in written:
        _say(a, f"  wrote {path}: {what}")
    if not have_plots:
        _say(a, "  (plots skipped: matplotlib is not installed; pip install 'pixelkm[plot]')")


# -- parser -------------------------------------------------------------------------------------------------

COLOR_FEATURES = ("rgb", "lab", "oklab")
ALL_FEATURES = ("rgb", "lab", "oklab", "xyrgb", "xylab", "xyoklab")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixelkm",
        description="k-means for images: quantize, segment, palette, background removal, choosing k.",
        epilog="Outputs are never overwritten without --force. Try: pixelkm demo --out pixelkm-demo",
    )
    parser.add_argument("--version", action="version", version=f"pixelkm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, helptext: str, fn: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.set_defaults(func=fn)
        return p

    p = add("quantize", "reduce an image to K colors; writes a palette PNG and reports the size ratio", cmd_quantize)
    p.add_argument("input", type=Path, help="image file (PNG, JPEG, TIFF, WebP, BMP, GIF, ...)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output image (.png gives a palette PNG)")
    p.add_argument("--dither", action="store_true", help="Floyd-Steinberg dithering with the fitted palette")
    p.add_argument("--plot", type=Path, help="also write original vs quantized side by side")
    _clean_arg(p)
    _common(p, k=16, k_help="number of colors", features=COLOR_FEATURES, default_features="rgb")

    p = add("segment", "split an image into K regions (pixel position + color)", cmd_segment)
    p.add_argument("input", type=Path, help="image file")
    p.add_argument("-o", "--out", type=Path, required=True, help="output image: the segments overlaid")
    p.add_argument("--mean-image", type=Path, help="also write the segments painted in their mean colors")
    p.add_argument("--spatial-weight", type=_non_negative_float, default=1.0, help="weight of x, y (default 1)")
    p.add_argument("--plot", type=Path, help="also write a figure of the segmentation")
    _clean_arg(p)
    _common(p, k=8, k_help="number of segments", features=ALL_FEATURES, default_features="xyrgb")

    p = add("palette", "the K dominant colors, by share, with hex codes", cmd_palette)
    p.add_argument("input", type=Path, help="image file")
    p.add_argument("-o", "--out", type=Path, help="also write a swatch image")
    p.add_argument("--json", action="store_true", help="print JSON (hex, rgb, proportion) instead of a table")
    p.add_argument("--plot", type=Path, help="also write a bar chart of the palette")
    _clean_arg(p)
    _common(p, k=6, k_help="number of colors", features=COLOR_FEATURES, default_features="rgb")

    p = add("remove-bg", "make the color clusters that dominate the border transparent", cmd_remove_bg)
    p.add_argument("input", type=Path, help="image file")
    p.add_argument("-o", "--out", type=Path, required=True, help="output RGBA image (.png or .webp)")
    p.add_argument("--mask", type=Path, help="also write the mask (white = kept)")
    p.add_argument("--border", type=_positive_int, default=None, help="border band in pixels (default 2%% of side)")
    p.add_argument(
        "--min-border-share",
        type=_non_negative_float,
        default=0.2,
        help="share of the border a cluster needs to be background (default 0.2)",
    )
    p.add_argument(
        "--not-connected", action="store_true", help="remove background colors everywhere, not only from the border"
    )
    _common(p, k=4, k_help="number of color clusters", features=COLOR_FEATURES, default_features="lab")

    p = add("choose-k", "inertia (elbow) and silhouette for a range of K, and a suggested K", cmd_choose_k)
    p.add_argument("input", type=Path, help="image file")
    p.add_argument("--ks", type=parse_ks, default=list(range(2, 11)), help="ks to try: 2-10, 2-20:2 or 2,4,8")
    p.add_argument("--sample-size", type=_positive_int, default=2000, help="pixels in the silhouette sample")
    p.add_argument("--fit-size", type=_positive_int, default=None, help="fit every K on this many random pixels")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", type=Path, help="also write the elbow / silhouette plot")
    p.add_argument("--features", choices=ALL_FEATURES, default="rgb", help="pixel features to cluster (default rgb)")
    _engine(p)

    p = add("demo", "run every application on a bundled photo and write the outputs and plots to a folder", cmd_demo)
    p.add_argument("--out", type=Path, default=Path("pixelkm-demo"), help="output folder (default pixelkm-demo)")
    p.add_argument("--image", type=Path, default=None, help="use this image instead of the bundled photo")
    p.add_argument("-k", "--k", type=_positive_int, default=16, help="colors for quantization (default 16)")
    _engine(p)

    for sp in sub.choices.values():
        sp.add_argument("-q", "--quiet", action="store_true", help="print nothing but requested data")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pixelkm`` command; returns the exit code (0 ok, 1 error, 2 bad usage)."""
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # no command: the list of commands, not just "COMMAND"
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("pixelkm: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line, no traceback: the message names the problem
        if os.environ.get("PIXELKM_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, MemoryError):
            msg = (
                "out of memory"
                + (f": {msg}" if str(e).strip() else "")
                + ("; the image or the number of clusters is too large for the free memory")
            )
        elif not isinstance(e, (OSError, ValueError, TypeError, ImportError)):
            msg = f"{type(e).__name__}: {msg}"
        print(f"pixelkm: error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
