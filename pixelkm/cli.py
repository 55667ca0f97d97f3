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
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ... (default auto: CUDA if present)")
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
        "device": _device(a),
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


def _check_early(
    outputs: list[Path | None] = (),
    images: list[Path] = (),
    palette: Path | None = None,
    *,
    plots: list[Path | None] = (),
    max_pixels: int | None = None,
) -> None:
    """The checks a command can make from names and headers alone, before it imports torch and the toolkit (1.5-2
    s on the 2-core machine): an error then comes in a tenth of a second. ``outputs``: image files to be written
    (their suffix names a format Pillow writes); ``images``: inputs to be decoded whole (they exist, are images
    Pillow recognizes, within ``max_pixels`` and the memory available); ``palette``: a palette file that exists;
    ``plots``: figures to be written (their suffix names a format matplotlib writes)."""
    from .io.files import require_file
    from .io.pillow import check_image, figure_format, image_format

    for p in outputs:
        if p is not None:
            image_format(p)
    for p in plots:
        if p is not None:
            figure_format(p)
    for p in images:
        check_image(p, max_pixels)
    if palette is not None:
        require_file(palette, "palette file")


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


# -- many inputs --------------------------------------------------------------------------------------------

_GLOB_CHARS = set("*?[")


def _image_suffixes() -> set[str]:
    from PIL import Image

    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def expand_inputs(items: list[Path]) -> list[Path]:
    """Files as given, glob patterns expanded (sorted), folders replaced by the image files directly in them
    (sorted); an error names the pattern or folder that matches nothing. Duplicates are dropped."""
    import glob

    out: list[Path] = []
    suffixes = None
    for item in items:
        text = str(item)
        if item.is_dir():
            suffixes = suffixes or _image_suffixes()
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise FileNotFoundError(f"folder {item} holds no image files")
            out.extend(found)
        elif not item.exists() and _GLOB_CHARS & set(text):
            found = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
            if not found:
                raise FileNotFoundError(f"no file matches {text!r}")
            out.extend(found)
        else:
            out.append(item)
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _targets(a: argparse.Namespace, inputs: list[Path], suffix: str) -> list[Path]:
    """One output per input: ``-o`` for a single input, else ``--out-dir``/<stem><suffix>.png."""
    if a.out is not None and a.out_dir is not None:
        raise ValueError("give either -o/--out (one input) or --out-dir (any number of inputs), not both")
    if a.out is not None:
        if len(inputs) > 1:
            raise ValueError(f"-o/--out names one output but {len(inputs)} inputs were given; use --out-dir")
        return [a.out]
    if a.out_dir is None:
        raise ValueError("give -o/--out for the output file, or --out-dir for a folder of outputs")
    if not a.out_dir.is_dir():
        raise FileNotFoundError(f"--out-dir {a.out_dir} is not an existing folder")
    outs = [a.out_dir / f"{p.stem}{suffix}.png" for p in inputs]
    if len({o.resolve() for o in outs}) != len(outs):
        raise ValueError("two inputs have the same file name; their outputs in --out-dir would collide")
    return outs


def _parse_size(text: str) -> int:
    """ "200000", "200K", "1.5M" (K = 1024) -> bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    if t and t[-1] in "KMG":
        mult = 1024 ** ("KMG".index(t[-1]) + 1)
        t = t[:-1]
    try:
        v = float(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 200000, 200K or 1.5M; got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite size such as 200000, 200K or 1.5M; got {text!r}")
    if not v >= 1:
        raise argparse.ArgumentTypeError(f"expected a size of at least 1 byte, got {text!r}")
    return int(v)


def _device(a: argparse.Namespace) -> Any:
    """--device auto: CUDA when this torch sees a GPU, else the CPU."""
    if a.device != "auto":
        return a.device
    import torch

    return "cuda" if torch.cuda.is_available() else None


def _bar(a: argparse.Namespace, items: list, desc: str):
    from .image import progress

    return progress(items, enabled=not a.quiet and not getattr(a, "json", False), desc=desc, total=len(items))


# -- commands -----------------------------------------------------------------------------------------------


def cmd_quantize(a: argparse.Namespace) -> None:
    inputs = expand_inputs(a.input)
    outs = _targets(a, inputs, a.suffix)
    if a.plot is not None and len(inputs) > 1:
        raise ValueError("--plot takes one input")
    palettes = () if a.palette is None else (a.palette,)  # an input too: never an output, --force or not
    _check_targets(outs + [a.plot], a.force, (*inputs, *palettes))
    # (several inputs: each one's error is reported as it comes and the others go on)
    _check_early(outs, inputs if len(inputs) == 1 else [], a.palette, plots=[a.plot], max_pixels=a.max_pixels)
    from .image import load_image, load_palette, plot_quantize, quantize

    given = None if a.palette is None else load_palette(a.palette)  # read (and checked) once, before any work
    kw = _fit_kwargs(a)
    kw.pop("max_pixels")
    failed = skipped = 0
    many = len(inputs) > 1
    pairs = list(zip(inputs, outs))
    for src, dst in _bar(a, pairs, "quantize") if many else pairs:
        t0 = time.perf_counter()
        try:
            steps = ["load", "fit", "write"]
            state: dict[str, Any] = {}
            for step in steps if many else _bar(a, steps, "quantize"):
                if step == "load":
                    state["img"] = load_image(src, max_pixels=a.max_pixels)
                elif step == "fit":
                    state["r"] = quantize(
                        state["img"], a.k, features=a.features, palette=given, dither=a.dither, clean=a.clean, **kw
                    )
                else:
                    state["info"] = state["r"].save(
                        dst, force=a.force, max_bytes=a.max_size, skip_if_larger=a.skip_if_larger, inputs=palettes
                    )
        except Exception as e:
            if not many:
                raise
            failed += 1
            print(f"pixelkm: error: {src}: {_message(e)}", file=sys.stderr)
            continue
        r, info = state["r"], state["info"]
        if info.skipped:
            skipped += 1
            _say(a, f"skipped {dst}: {info.skipped}")
            continue
        kind = "palette PNG" if r.is_palette_image else "truecolor: more than 256 colors do not fit a palette"
        if info.path.suffix.lower() != ".png":
            kind = info.path.suffix.lower().lstrip(".").upper()
        _say(
            a,
            f"wrote {info.path} ({r.n_colors} colors{', dithered' if r.dithered else ''}, {kind}, {_kb(info.bytes)}, "
            f"{info.ratio:.3f} x the original's {_kb(info.original_bytes)}), PSNR {r.psnr:.2f} dB"
            + (f", {r.n_outliers} outlier pixels {a.clean}d" if a.clean else "")
            + (f", {time.perf_counter() - t0:.2f} s" if many else ""),
        )
    if many:
        _say(a, f"{len(inputs) - failed - skipped} of {len(inputs)} written, {skipped} skipped, {failed} failed")
    if a.plot is not None and not failed:
        _plot(a, lambda: plot_quantize(state["r"]), a.plot)
    if failed:
        raise RuntimeError(f"{failed} of {len(inputs)} inputs failed")
    if skipped:
        raise _Skipped(f"{skipped} of {len(inputs)} outputs skipped by --max-size / --skip-if-larger")


class _Skipped(Exception):
    """Exit status 98 (as pngquant's --skip-if-larger): some output was not written because of a size guard."""


def _check_alpha_outputs(img: Any, paths: list[Path | None]) -> None:
    """ValueError, before any work, for an output whose format cannot hold the transparency of ``img`` (a loaded
    image) that it will carry."""
    from .io.pillow import check_alpha, image_format

    if img.alpha is None:
        return
    alpha = img.alpha
    transparent = bool((alpha < 255).any())
    partial = bool(((alpha > 0) & (alpha < 255)).any())
    for p in paths:
        if p is not None:
            check_alpha(p, image_format(p), transparent=transparent, partial=partial)


def cmd_segment(a: argparse.Namespace) -> None:
    _check_targets([a.out, a.mean_image, a.plot], a.force, (a.input,))
    _check_early([a.out, a.mean_image], [a.input], plots=[a.plot], max_pixels=a.max_pixels)
    from .image import load_image, plot_segments, save_image, segment

    st: dict[str, Any] = {}
    for step in _bar(a, ["load", "fit", "write"], "segment"):
        if step == "load":
            st["img"] = load_image(a.input, max_pixels=a.max_pixels)
            # both images carry the input's alpha: a format that cannot hold it is refused before the fit (the
            # overlay was written, then the mean image refused)
            _check_alpha_outputs(st["img"], [a.out, a.mean_image])
        elif step == "fit":
            kw = _fit_kwargs(a)
            kw.pop("max_pixels")
            st["r"] = segment(st["img"], a.k, features=a.features, spatial_weight=a.spatial_weight, clean=a.clean, **kw)
        else:
            st["info"] = st["r"].save(a.out, force=a.force)
            if a.mean_image is not None:
                save_image(st["r"].mean_image, a.mean_image, force=a.force, inputs=(a.input,))
    r, info = st["r"], st["info"]
    _say(a, f"wrote {info.path} ({r.n_segments} segments overlaid, {_kb(info.bytes)})")
    for i, (size, color) in enumerate(zip(r.sizes.tolist(), r.mean_colors.tolist())):
        hexc = "#" + "".join(f"{c:02x}" for c in color)
        _say(a, f"  segment {i}: {size} pixels, mean color {hexc}")
    if a.mean_image is not None:
        _say(a, f"wrote {a.mean_image} (segments in their mean colors)")
    _plot(a, lambda: plot_segments(r), a.plot)


def cmd_palette(a: argparse.Namespace) -> None:
    _check_targets([a.out, a.plot], a.force, (a.input,))
    _check_early([a.out], [a.input], plots=[a.plot], max_pixels=a.max_pixels)
    from .image import load_image, palette, plot_palette

    st: dict[str, Any] = {}
    for step in _bar(a, ["load", "fit"], "palette"):
        if step == "load":
            st["img"] = load_image(a.input, max_pixels=a.max_pixels)
        else:
            kw = _fit_kwargs(a)
            kw.pop("max_pixels")
            st["r"] = palette(st["img"], a.k, features=a.features, min_delta_e=a.min_delta_e, clean=a.clean, **kw)
    r = st["r"]
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


def cmd_remove_bg(a: argparse.Namespace) -> None:
    from .io.pillow import check_alpha, image_format

    _check_targets([a.out, a.mask], a.force, (a.input,))
    # the result is its transparency (soft with --feather): refused before any work where the format would lose it
    check_alpha(a.out, image_format(a.out), transparent=True, partial=a.feather > 0)
    _check_early([a.mask], [a.input], max_pixels=a.max_pixels)
    from .image import load_image, remove_background, save_image

    st: dict[str, Any] = {}
    for step in _bar(a, ["load", "find the background", "write"], "remove-bg"):
        if step == "load":
            st["img"] = load_image(a.input, max_pixels=a.max_pixels)
        elif step == "write":
            st["info"] = st["r"].save(a.out, force=a.force, inputs=(a.input,))
            if a.mask is not None:
                save_image(st["r"].mask, a.mask, force=a.force, inputs=(a.input,))
        else:
            st["r"] = remove_background(
                st["img"], a.k, border=a.border, feather=a.feather, random_state=a.seed, device=_device(a)
            )
    r, info = st["r"], st["info"]
    total = r.mask.shape[0] * r.mask.shape[1]
    _say(a, f"wrote {info.path} (RGBA, {r.n_background} of {total} pixels made transparent)")
    if a.mask is not None:
        _say(a, f"wrote {a.mask} (mask: white = kept)")


def cmd_choose_k(a: argparse.Namespace) -> None:
    _check_targets([a.plot], a.force, (a.input,))
    _check_early(plots=[a.plot])
    from .io.pillow import check_image

    width, height = check_image(a.input, a.max_pixels)  # the header only (any mode): k is checked before any work
    n_pixels = width * height
    if max(a.ks) > n_pixels:
        raise ValueError(f"--ks goes up to k = {max(a.ks)}, more than the {n_pixels} pixels of {a.input}")
    from .image import choose_k, plot_choose_k

    r = choose_k(
        a.input,
        a.ks,
        features=a.features,
        sample_size=a.sample_size,
        fit_size=a.fit_size,
        progress=not a.json and not a.quiet,
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
        "product": "product.png",
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
    if a.k > 256:
        raise ValueError(f"-k {a.k}: the demo's dithered image is a palette image of at most 256 colors; ask for fewer")
    kw = _fit_kwargs(a)
    img = pim.load_image(src, max_pixels=a.max_pixels)
    n_colors = pim.count_colors(img)
    if n_colors < 2:
        raise ValueError(f"{src} has {n_colors} distinct (opaque) color(s): the demo needs at least 2")
    results: dict[str, Any] = {}

    # every result first, then the folder and the files: a demo that fails computing writes nothing
    def quantize() -> None:
        results["quantize"] = pim.quantize(img, a.k, **kw)
        results["dithered"] = results["quantize"].dither()

    def segment() -> None:
        results["segment"] = pim.segment(img, 8, **kw)

    def palette() -> None:
        results["palette"] = pim.palette(img, 6, **kw)

    def background() -> None:  # on a product-like photo (a photo rarely has a background to remove)
        product, truth = pim.product_scene("shadow", "bottle", size=(480, 640), seed=a.seed)
        results["product"], results["truth"] = product, truth
        results["background"] = pim.remove_background(product, random_state=a.seed, device=kw["device"])

    def choose_k() -> None:  # k = 2..10 (up to the image's distinct colors)
        ks = range(2, min(10, n_colors) + 1)
        results["choose_k"] = pim.choose_k(img, ks, fit_size=100_000, **kw)

    def figures() -> None:
        results["figures"] = {
            "plot_quantize": pim.plot_quantize(results["quantize"]),
            "plot_palette": pim.plot_palette(results["palette"]),
            "plot_segments": pim.plot_segments(results["segment"]),
            "plot_choose_k": pim.plot_choose_k(results["choose_k"]),
        }

    def write_json(key: str, data: dict) -> Path:
        text = json.dumps(data, indent=2).encode() + b"\n"
        return pim.atomic_write(paths[key], lambda f: f.write(text), force=a.force)

    def write() -> list[tuple[Path, str]]:
        written: list[tuple[Path, str]] = []
        try:
            out.mkdir(parents=True, exist_ok=True)
            r = results["quantize"]
            info = r.save(paths["quantized"], force=a.force)
            what = f"{r.n_colors} colors, PSNR {r.psnr:.2f} dB, {info.ratio:.3f} x the original size"
            written.append((info.path, what))
            d = results["dithered"]
            info = d.save(paths["dithered"], force=a.force)
            what = f"{d.n_colors} colors, Floyd-Steinberg dithered, {info.ratio:.3f} x the original"
            written.append((info.path, what))
            r = results["segment"]
            written.append((r.save(paths["segments"], force=a.force).path, f"{r.n_segments} xyrgb segments, overlay"))
            pim.save_image(r.mean_image, paths["segments_mean"], force=a.force)
            written.append((paths["segments_mean"], "segments in their mean colors"))
            r = results["palette"]
            written.append((r.save(paths["swatch"], force=a.force).path, "palette swatch: " + " ".join(r.hex)))
            written.append((write_json("palette_json", r.to_dict()), "palette: hex codes and proportions"))
            pim.save_image(results["product"], paths["product"], force=a.force)
            written.append((paths["product"], "a synthetic product photo (bottle, soft shadow)"))
            r, truth = results["background"], results["truth"]
            info = r.save(paths["background"], force=a.force)
            iou = float((r.mask & truth).sum() / (r.mask | truth).sum())
            written.append((info.path, f"background removed: {r.n_background} pixels transparent, IoU {iou:.3f}"))
            r = results["choose_k"]
            what = f"inertia and silhouette for k = {r.ks[0]}..{r.ks[-1]}, suggested k {r.suggested_k}"
            written.append((write_json("choose_k_json", r.to_dict()), what))
            for key, fig in results.get("figures", {}).items():
                pim.save_figure(fig, paths[key], force=a.force)
                written.append((paths[key], "plot"))
        except BaseException:
            if written:  # say what the failed run left behind
                names = ", ".join(str(p) for p, _ in written)
                print(
                    f"pixelkm: the demo stopped half-way; it had written {len(written)} file(s): {names}",
                    file=sys.stderr,
                )
            raise
        return written

    steps = [quantize, segment, palette, background, choose_k] + ([figures] if have_plots else [])
    t0 = time.perf_counter()
    for step in pim.progress(steps, enabled=not a.quiet, desc="demo", total=len(steps)):
        step()
    written = write()
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

    p = add(
        "quantize",
        "reduce images to K colors (or onto a given palette); writes palette PNGs and reports the size ratio",
        cmd_quantize,
    )
    p.add_argument("input", type=Path, nargs="+", help="image files, glob patterns ('photos/*.jpg') or folders")
    p.add_argument("-o", "--out", type=Path, help="output image for one input (.png gives a palette PNG)")
    p.add_argument("--out-dir", type=Path, help="folder for the outputs of any number of inputs: <name><suffix>.png")
    p.add_argument("--suffix", default="-quant", help="added to each input's name in --out-dir (default -quant)")
    p.add_argument(
        "--palette", type=Path, help="map onto this palette: JSON list of '#rrggbb' / [r, g, b], or a swatch"
    )
    p.add_argument("--dither", action="store_true", help="Floyd-Steinberg dithering with the palette")
    p.add_argument("--max-size", type=_parse_size, help="skip an output larger than this (e.g. 200K, 1.5M)")
    p.add_argument("--skip-if-larger", action="store_true", help="skip an output larger than its input file")
    p.add_argument("--plot", type=Path, help="also write original vs quantized side by side (one input)")
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

    p = add("palette", "the K dominant colors, by share, with hex codes (near-duplicate shades merged)", cmd_palette)
    p.add_argument("input", type=Path, help="image file")
    p.add_argument("-o", "--out", type=Path, help="also write a swatch image")
    p.add_argument("--json", action="store_true", help="print JSON (hex, rgb, proportion) instead of a table")
    p.add_argument(
        "--min-delta-e",
        type=_non_negative_float,
        default=0.0,
        help="also merge colors closer than this CIEDE2000 difference (default 0: merge only down to K)",
    )
    p.add_argument("--plot", type=Path, help="also write a bar chart of the palette")
    _clean_arg(p)
    _common(p, k=6, k_help="largest number of colors", features=COLOR_FEATURES, default_features="lab")

    p = add("remove-bg", "find the background from the image border and make it transparent", cmd_remove_bg)
    p.add_argument("input", type=Path, help="image file")
    p.add_argument("-o", "--out", type=Path, required=True, help="output RGBA image (.png or .webp)")
    p.add_argument("--mask", type=Path, help="also write the mask (white = kept)")
    p.add_argument("--border", type=_positive_int, default=None, help="border band in pixels (default 2%% of side)")
    p.add_argument(
        "--feather", type=_non_negative_float, default=0.0, help="soft edge: blur the alpha by this many pixels"
    )
    p.add_argument("-k", "--k", type=_positive_int, default=4, metavar="K", help="color clusters per model (default 4)")
    _engine(p)

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


def _message(e: BaseException) -> str:
    """One line naming the problem (the exception's type too, where the message alone may not say it)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, MemoryError):
        msg = (
            "out of memory"
            + (f": {msg}" if str(e).strip() else "")
            + "; the image or the number of clusters is too large for the free memory"
        )
    elif not isinstance(e, (OSError, ValueError, TypeError, ImportError)):
        msg = f"{type(e).__name__}: {msg}"
    return msg


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pixelkm`` command; returns the exit code (0 ok, 1 error, 2 bad usage, 98 some
    output skipped by --max-size / --skip-if-larger)."""
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # no command: the list of commands, not just "COMMAND"
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if argv is None:
        _passive_openmp()
    _prefetch_input(args)
    try:
        code = _run(args)
    finally:
        from .io.pillow import drop_prefetch

        drop_prefetch()
    if argv is None and "torch" in sys.modules:
        _exit_now(code)
    return code


def _passive_openmp() -> None:
    """The command's own process: OpenMP workers (numba's and torch's runtimes) sleep at the end of a parallel region
    instead of spinning for milliseconds, unless the environment names a wait policy. Both runtimes read it as they
    load (before torch is imported). Measured on the 2-core machine with another process spinning on one core, the 12
    MP photo, every command's k-means part: quantize -k 16 0.96 -> 0.62 s, -k 256 3.17 -> 2.52 s, choose-k 2.58 ->
    1.66 s, segment 0.72 -> 0.51 s (docs/cpu.md); quiet, within the noise. From Python, ``main([...])`` leaves the
    environment alone (the process's runtimes may already be loaded)."""
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "passive"


def _prefetch_input(args: argparse.Namespace) -> None:
    """Start decoding the command's one input image in a background thread, so that it overlaps the import of
    torch and the toolkit (0.4 s of a 12 MP PNG's decode hidden on 2 cores); the command's ``load_image`` takes the
    result, with the same errors. Nothing for several inputs, a folder or a pattern."""
    src = getattr(args, "input", None)
    if isinstance(src, list):
        src = src[0] if len(src) == 1 else None
    if isinstance(src, Path) and src.is_file():
        from .io.pillow import prefetch

        prefetch(src, getattr(args, "max_pixels", None))


def _exit_now(code: int) -> None:
    """End the process at once, the output files written and stdout/stderr flushed: the ``pixelkm`` command
    (``argv`` None) skips the interpreter's tear-down of torch and numba, which takes 0.4 s on the 2-core
    machine after a 12 MP photo. A call ``main([...])`` from Python returns as usual."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(code)


def _drop_stdout() -> None:
    """Point stdout at the null device, so that the flush at exit does not fail again on the closed pipe."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a captured stdout): nothing to flush there
        pass


def _run(args: argparse.Namespace) -> int:
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("pixelkm: interrupted", file=sys.stderr)
        return 130
    except _Skipped as e:
        if not args.quiet:
            print(f"pixelkm: {e}", file=sys.stderr)
        return 98
    except BrokenPipeError:  # the reader of stdout left (`pixelkm ... --json | head`): stop quietly, as Unix tools do
        _drop_stdout()
        return 141  # 128 + SIGPIPE, the status of a tool that the signal ended
    except Exception as e:  # one line, no traceback: the message names the problem
        if os.environ.get("PIXELKM_DEBUG"):
            raise
        print(f"pixelkm: error: {_message(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
