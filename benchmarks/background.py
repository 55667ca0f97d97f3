"""Background removal on the synthetic product scenes: IoU against the known mask, per scene and the mean.

    python benchmarks/background.py [--size 240x320] [--seeds 1]

Every scene of ``pixelkm.image.SCENES`` (plain, colored, gradient, vignette, textured, soft-shadow and
blurred-photo backdrops; objects with parts close to the backdrop color) is drawn for seeds 0..N-1 and cut
out with ``remove_background`` (defaults); IoU = |mask & truth| / |mask | truth|. Where OpenCV imports, its
GrabCut (5 iterations, initialised with the rectangle inside the border band) is run on the same scenes as a
baseline. Seconds are wall time per call (the machine may be shared; see the load printed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pixelkm.image as pim  # noqa: E402  (after the sys.path line above)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def grabcut(img: np.ndarray) -> np.ndarray | None:
    try:
        import cv2
    except ImportError:
        return None
    h, w, _ = img.shape
    b = max(1, min(h, w) // 50)
    mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(img[:, :, ::-1].copy(), mask, (b, b, w - 2 * b, h - 2 * b), bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="240x320", help="HxW of the scenes (default 240x320)")
    p.add_argument("--seeds", type=int, default=1)
    a = p.parse_args()
    H, W = (int(v) for v in a.size.split("x"))
    print(f"scenes {H}x{W}, seeds 0..{a.seeds - 1}; load {Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"{'scene':<18} {'IoU':>7} {'s':>6} {'GrabCut':>8}")
    ours, theirs = [], []
    for name, _, _ in pim.SCENES:
        for seed in range(a.seeds):
            img, truth = pim.scene(name, size=(H, W), seed=seed)
            t0 = time.perf_counter()
            r = pim.remove_background(img)
            dt = time.perf_counter() - t0
            ours.append(iou(r.mask, truth))
            gc = grabcut(img)
            theirs.append(np.nan if gc is None else iou(gc, truth))
            print(f"{name + (f'/{seed}' if a.seeds > 1 else ''):<18} {ours[-1]:>7.4f} {dt:>6.2f} {theirs[-1]:>8.4f}")
    print(f"{'mean':<18} {np.mean(ours):>7.4f} {'':>6} {np.mean(theirs):>8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
