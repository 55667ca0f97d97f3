"""Quantization quality: PSNR of pixelkm vs scikit-learn KMeans vs Pillow's median cut, on every photo.

    python benchmarks/quality.py                   # 16 colors, RGB, n_init=1, seeds 0..2, ../shared/images
    python benchmarks/quality.py --n-init 3 --seeds 2 --k 16 --images path/to/pngs

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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=REPO.parent / "shared" / "images")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--n-init", type=int, default=1)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 for both k-means (default 3)")
    p.add_argument("--device", default=None)
    a = p.parse_args()
    photos = sorted(a.images.glob("*.png"))
    if not photos:
        print(f"no PNG files in {a.images}", file=sys.stderr)
        return 1
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
