"""A 1-gigapixel RGB image (32768 x 32768, 3.2 GB as uint8) quantized to 16 colors end to end, out of core.

Step 1 (a child process, so that its memory is not counted): build the image as a raw ``.npy`` under /tmp by
tiling the photos of ../shared/images, each resized (bicubic) to a 2048 x 2048 tile and flipped by tile position,
written strip by strip (one row of tiles at a time). Step 2 (this process): ``fit_stream`` reads the file in
chunks (plain file reads into a buffer, prefetched on a thread; on a GPU through pinned double buffers with
``max_device_memory``), counts its colors in one pass, fits k-means++ / Lloyd on (distinct color, count) in memory
(exact: the same iterates as on every pixel), then ``predict_stream`` writes the quantized image as a ``.npy``
in a second pass. Peak resident memory of step 2 is the process's ru_maxrss; a spot check compares 32 random
output rows with a float64 nearest-center computation. Both files are deleted at the end (``--keep`` keeps them).

    python benchmarks/huge_image.py [--side 32768] [--k 16] [--device cpu|cuda] [--max-device-memory 2GiB]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"
TILE = 2048


def build(path: Path, side: int) -> None:
    """Write the side x side x 3 uint8 image to ``path`` one row of tiles at a time."""
    from PIL import Image

    from pixelkm.io.strips import NpyWriter

    photos = sorted(IMAGES.glob("*.png"))
    tiles = []
    for p in photos:
        with Image.open(p) as im:
            tiles.append(np.asarray(im.convert("RGB").resize((TILE, TILE), Image.BICUBIC)))
    n = side // TILE
    with NpyWriter(path, (side, side, 3), np.uint8) as w:
        for ty in range(n):
            strip = np.empty((TILE, side, 3), np.uint8)
            for tx in range(n):
                t = tiles[(ty * n + tx) % len(tiles)]
                t = t[:, ::-1] if (tx + ty) % 2 else t
                t = t[::-1] if (tx // 2 + ty) % 2 else t
                strip[:, tx * TILE : (tx + 1) * TILE] = t
            w.write(strip)


def read_rows(path: Path, rows: np.ndarray) -> np.ndarray:
    """Pixels (len(rows) * W, 3) of the given rows of a (H, W, 3) uint8 .npy, by file reads (no mmap)."""
    from pixelkm.io.strips import image_layout, readinto_exact

    tile = image_layout(path).tiles[0]
    out = np.empty((len(rows), tile.stride), np.uint8)
    with open(path, "rb") as f:
        for i, r in enumerate(rows):
            f.seek(tile.offset + int(r) * tile.stride)
            readinto_exact(f, out[i])
    return out.reshape(-1, 3)


def parse_bytes(s: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 1000, "mb": 10**6, "gb": 10**9}
    low = s.lower()
    for u, m in units.items():
        if low.endswith(u):
            return int(float(low[: -len(u)]) * m)
    return int(low)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=32768)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-device-memory", default=None, help="e.g. 2GiB (caps the stream's device buffers)")
    ap.add_argument("--dir", default="/tmp/pixelkm-huge")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    d = Path(args.dir)
    src, out = d / "huge.npy", d / "huge_q16.npy"
    if args.build_only:
        build(src, args.side)
        return
    d.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--build-only", "--side", str(args.side), "--dir", str(d)], check=True
        )
        t_build = time.perf_counter() - t0
        image_bytes = args.side * args.side * 3
        print(f"built {src} ({image_bytes / 1e9:.2f} GB, {args.side}x{args.side}) in {t_build:.1f} s", flush=True)

        import torch

        from pixelkm.estimators.stream import fit_stream, predict_stream

        cap = parse_bytes(args.max_device_memory) if args.max_device_memory else None
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
            f"device {args.device}, max_device_memory {cap}",
            flush=True,
        )
        t0 = time.perf_counter()
        fit = fit_stream(src, args.k, random_state=0, device=args.device, max_device_memory=cap, progress=True)
        t_fit = time.perf_counter() - t0
        print(
            f"fit: {t_fit:.1f} s, {fit.n_passes} pass(es), {fit.n_distinct} distinct colors, {fit.n_iter} "
            f"iterations, inertia {fit.inertia:.6g}, "
            f"PSNR {10 * np.log10(255**2 * 3 * args.side**2 / fit.inertia):.3f} dB",
            flush=True,
        )
        t0 = time.perf_counter()
        _, inertia = predict_stream(
            src, fit.centers, out, quantize=True, device=args.device, max_device_memory=cap, progress=True
        )
        t_out = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"quantized image written: {t_out:.1f} s, inertia {inertia:.6g} (fit said {fit.inertia:.6g})", flush=True)

        # spot check: 32 random rows (1M pixels) of input and output, read with file reads (no mmap, so that the
        # check does not grow the resident memory), against a float64 nearest center
        rows = np.sort(np.random.default_rng(0).choice(args.side, 32, replace=False))
        px, got = read_rows(src, rows).astype(np.float64), read_rows(out, rows)
        C = fit.centers.astype(np.float64)
        want = np.clip(np.round(C), 0, 255).astype(np.uint8)[((px[:, None] - C[None]) ** 2).sum(-1).argmin(1)]
        agree = float((got == want).all(1).mean())
        peak_all = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        total = t_fit + t_out
        print(f"spot check: {agree:.6f} of {len(px)} pixels (32 random rows) equal the float64 nearest-center color")
        print(
            f"END TO END (fit + quantized output): {total:.1f} s; peak RSS {peak / 2**30:.2f} GiB = "
            f"{peak / image_bytes:.3f} x the image's {image_bytes / 2**30:.2f} GiB "
            f"(whole process including the check: {peak_all / 2**30:.2f} GiB)"
        )
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
