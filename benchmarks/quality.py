"""Quantization quality: PSNR and mean CIEDE2000 of the rgb, lab and oklab features; pixelkm vs scikit-learn.

    python benchmarks/quality.py                   # features x 16/64/256 colors, seed 0, ../shared/images
    python benchmarks/quality.py --ks 16,64 --photos kodim05,kodim23
    python benchmarks/quality.py --vs-sklearn      # 16 colors, RGB, n_init=1, seeds 0..2
    python benchmarks/quality.py --vs-sklearn --n-init 3 --seeds 2 --k 16 --images path/to/pngs

The default report quantizes every photo with ``features`` rgb, lab and oklab (n_init=1, seed 0) at each k
and gives, per photo and as the mean over the photos, the PSNR (dB, sRGB, all pixels and channels: higher is
better) and the mean CIEDE2000 difference between each original pixel and its quantized color (lower is
better; computed exactly on the distinct (original, quantized) color pairs weighted by their counts).

``--vs-sklearn``:

For every photo, pixelkm (``pixelkm.image.quantize``, k-means++) and scikit-learn (``KMeans``, k-means++)
run with the same ``n_init`` and the same seeds; the palette of each is its rounded cluster means, and PSNR
is taken over all pixels and channels. The table gives the mean PSNR over the seeds, the worst seed's
difference, and the check "pixelkm >= scikit-learn - 0.1 dB" on the mean. Pillow's median cut
(``Image.quantize(k, method=MEDIANCUT)``) is deterministic and run once. scikit-learn is needed
(``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pixelkm.image import quantize  # noqa: E402  (after the sys.path line above)

MARGIN_DB = 0.1


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def sklearn_psnr(rgb: np.ndarray, k: int, n_init: int, seed: int) -> tuple[float, float]:
    from sklearn.cluster import KMeans

    X = rgb.reshape(-1, 3).astype(np.float64)
    t = time.perf_counter()
    km = KMeans(k, init="k-means++", n_init=n_init, random_state=seed).fit(X)
    dt = time.perf_counter() - t
    pal = np.clip(np.round(km.cluster_centers_), 0, 255).astype(np.uint8)
    return psnr(pal[km.labels_].reshape(rgb.shape), rgb), dt


def pixelkm_psnr(rgb: np.ndarray, k: int, n_init: int, seed: int, device: str | None) -> tuple[float, float]:
    t = time.perf_counter()
    r = quantize(rgb, k, n_init=n_init, random_state=seed, device=device)
    dt = time.perf_counter() - t
    assert abs(r.psnr - psnr(r.image, rgb)) < 1e-9  # the reported PSNR is the one computed here
    return r.psnr, dt


def median_cut_psnr(rgb: np.ndarray, k: int) -> float:
    q = Image.fromarray(rgb).quantize(k, method=Image.Quantize.MEDIANCUT).convert("RGB")
    return psnr(np.asarray(q), rgb)


def mean_delta_e(original: np.ndarray, quantized: np.ndarray) -> float:
    """Mean CIEDE2000 of every pixel to its quantized color, over the distinct (original, quantized) pairs."""
    from pixelkm.image import ciede2000, rgb_to_lab

    pairs = np.concatenate([original.reshape(-1, 3), quantized.reshape(-1, 3)], axis=1)
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    u = torch.from_numpy(uniq)
    d = ciede2000(rgb_to_lab(u[:, :3].contiguous()), rgb_to_lab(u[:, 3:].contiguous())).numpy()
    return float((d * counts).sum() / counts.sum())


def features_report(photos: list[Path], ks: list[int], device: str | None) -> int:
    feats = ("rgb", "lab", "oklab")
    print(
        f"{'photo':<10} {'k':>4}  "
        + "  ".join(f"{f + ' dB':>9} {f + ' dE':>9}" for f in feats)
        + "  fit s (rgb/lab/oklab)"
    )
    means: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for path in photos:
        with Image.open(path) as im:
            rgb = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        for k in ks:
            cells, times = [], []
            for f in feats:
                t = time.perf_counter()
                r = quantize(rgb, k, features=f, random_state=0, device=device)
                times.append(time.perf_counter() - t)
                de = mean_delta_e(rgb, r.image)
                assert abs(r.psnr - psnr(r.image, rgb)) < 1e-9
                means.setdefault((k, f), []).append((r.psnr, de))
                cells.append(f"{r.psnr:>9.2f} {de:>9.3f}")
            print(f"{path.stem:<10} {k:>4}  " + "  ".join(cells) + "  " + "/".join(f"{t:.1f}" for t in times))
    print("mean over the photos:")
    for k in ks:
        cells = []
        for f in feats:
            v = np.array(means[(k, f)])
            cells.append(f"{v[:, 0].mean():>9.2f} {v[:, 1].mean():>9.3f}")
        print(f"{'mean':<10} {k:>4}  " + "  ".join(cells))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=REPO.parent / "shared" / "images")
    p.add_argument("--photos", default=None, help="comma-separated photo names (default: every PNG in --images)")
    p.add_argument("--ks", default="16,64,256", help="color counts of the features report (default 16,64,256)")
    p.add_argument("--vs-sklearn", action="store_true", help="the RGB comparison with scikit-learn instead")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--n-init", type=int, default=1)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 for both k-means (default 3)")
    p.add_argument("--device", default=None)
    a = p.parse_args()
    photos = sorted(a.images.glob("*.png"))
    if a.photos:
        want = {n.strip().removesuffix(".png") for n in a.photos.split(",")}
        photos = [ph for ph in photos if ph.stem in want]
    if not photos:
        print(f"no PNG files in {a.images}", file=sys.stderr)
        return 1
    if not a.vs_sklearn:
        print(
            f"features report: n_init=1, seed 0; {platform.processor() or platform.machine()}, {os.cpu_count()} "
            f"CPUs, torch {torch.__version__}; load {Path('/proc/loadavg').read_text().split()[:3]}"
        )
        return features_report(photos, [int(k) for k in a.ks.split(",")], a.device)
    print(
        f"k={a.k}, RGB, n_init={a.n_init}, seeds 0..{a.seeds - 1}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs visible, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    head = (
        f"{'photo':<12} {'pixelkm dB':>10} {'sklearn dB':>10} {'diff':>6} {'worst':>6} {'median cut':>10} "
        f"{'pk s/fit':>8} {'sk s/fit':>8}  check"
    )
    print(head)
    print("-" * len(head))
    ok_all = True
    for path in photos:
        with Image.open(path) as im:
            rgb = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        pk = [pixelkm_psnr(rgb, a.k, a.n_init, s, a.device) for s in range(a.seeds)]
        sk = [sklearn_psnr(rgb, a.k, a.n_init, s) for s in range(a.seeds)]
        pk_db, sk_db = np.mean([v for v, _ in pk]), np.mean([v for v, _ in sk])
        worst = min(x[0] - y[0] for x, y in zip(pk, sk))
        ok = pk_db >= sk_db - MARGIN_DB
        ok_all &= ok
        print(
            f"{path.stem:<12} {pk_db:>10.2f} {sk_db:>10.2f} {pk_db - sk_db:>+6.2f} {worst:>+6.2f} "
            f"{median_cut_psnr(rgb, a.k):>10.2f} {np.mean([t for _, t in pk]):>8.2f} "
            f"{np.mean([t for _, t in sk]):>8.2f}"
            f"  {'ok' if ok else 'FAIL'}"
        )
    print(f"pixelkm >= scikit-learn - {MARGIN_DB} dB on every photo: {'yes' if ok_all else 'NO'}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
