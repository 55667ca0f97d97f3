"""Batched k-means against a loop of single fits, on the same device, in one run.

The data: ``--batch`` crops of ``--size`` x ``--size`` pixels (uint8 RGB) cut at seeded random places from the
photographs in ../shared/images, each quantized to ``--k`` colors. The batched call gives problem i the seed
``seed + i``, and the loop fits problem i with ``random_state=seed + i``: both compute the same centers (checked
below), so the times compare the same work. The ``iters`` columns give the Lloyd iterations of the slowest
problem (the length of the batched loop) and their sum over problems (the loop's assign-and-update passes);
the batched loop steps every problem until at most half of them are still moving, then only those.

    python benchmarks/batched.py                         # 64 images of 256x256, 16 colors, on the CPU
    python benchmarks/batched.py --device cuda --repeat 5
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pixelkm
from pixelkm.engine.batched import fit_batched, problem_rng

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"


def crops(batch: int, size: int, seed: int) -> torch.Tensor:
    """``batch`` random size x size crops of the test photographs: uint8 tensor (batch, size * size, 3)."""
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(IMAGES.glob("*.png"))]
    if not photos:
        raise SystemExit(f"no photographs in {IMAGES}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch):
        img = photos[rng.integers(len(photos))]
        y, x = rng.integers(img.shape[0] - size + 1), rng.integers(img.shape[1] - size + 1)
        out.append(img[y : y + size, x : x + size].reshape(-1, 3))
    return torch.from_numpy(np.stack(out))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def iterations(X: torch.Tensor, k: int, seed: int, **kw) -> tuple[int, int]:
    """Lloyd iterations of the slowest problem and summed over the problems."""
    b = X.shape[0]
    n_iter = fit_batched(
        X, None, n_clusters=k, init="k-means++", n_init=1, generator=problem_rng(seed, b), backend="auto", **kw
    ).n_iter
    return int(n_iter.max()), int(n_iter.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs of each; the best is reported")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dev = torch.device(args.device)
    X = crops(args.batch, args.size, args.seed).to(dev)
    b, k, seed = args.batch, args.k, args.seed
    print(
        f"# {b} images of {args.size}x{args.size} uint8 RGB, k={k}, device={dev}, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(f"{'setting':<28}{'batched s':>11}{'loop s':>9}{'speed-up':>10}{'iters max':>11}{'iters sum':>11}")
    for name, kw in [
        ("converge (tol=1e-4)", {"tol": 1e-4, "max_iter": 300}),
        ("tol=0, max_iter=20", {"tol": 0.0, "max_iter": 20}),
    ]:
        # warm-up, and the check that both compute the same centers
        cb = pixelkm.kmeans(X, k, random_state=seed, **kw)[0]
        cl = torch.stack([pixelkm.kmeans(X[i], k, random_state=seed + i, **kw)[0] for i in range(b)])
        agree = torch.isclose(cb, cl, rtol=1e-4, atol=1e-3).all(-1).all(-1).float().mean().item()
        t_batch, t_loop = float("inf"), float("inf")
        for _ in range(args.repeat):
            sync(dev)
            t0 = time.perf_counter()
            pixelkm.kmeans(X, k, random_state=seed, **kw)
            sync(dev)
            t1 = time.perf_counter()
            for i in range(b):
                pixelkm.kmeans(X[i], k, random_state=seed + i, **kw)
            sync(dev)
            t2 = time.perf_counter()
            t_batch, t_loop = min(t_batch, t1 - t0), min(t_loop, t2 - t1)
        sb, sl = iterations(X, k, seed, **kw)
        print(
            f"{name:<28}{t_batch:>11.2f}{t_loop:>9.2f}{t_loop / t_batch:>9.2f}x{sb:>11}{sl:>11}"
            f"   (same centers in {agree:.0%} of problems)"
        )


if __name__ == "__main__":
    main()
