"""k-means|| (on a lightweight coreset) against full greedy k-means++: inertia after Lloyd converges, and time.

For each photo of ../shared/images (393k pixels, float32) and each seed, both inits run with the same seed, then
Lloyd runs to ``tol=1e-4`` from each; the ratio of the mean converged inertias is k-means|| / k-means++
(1.0 = as good). Init times are measured in the same run.

    python benchmarks/init_quality.py [--k 16] [--seeds 5] [--coreset-size 65536]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"


def main() -> None:
    from PIL import Image

    from pixelkm.engine.batched import lloyd_from
    from pixelkm.engine.init import kmeans_plusplus
    from pixelkm.engine.init_scalable import kmeans_parallel
    from pixelkm.engine.sources import mean_feature_variance

    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--coreset-size", type=int, default=None)
    args = ap.parse_args()
    print(f"torch threads {torch.get_num_threads()}, k={args.k}, seeds={args.seeds}")
    ratios = []
    for path in sorted(IMAGES.glob("*.png")):
        with Image.open(path) as im:
            X = torch.from_numpy(np.asarray(im.convert("RGB")).reshape(1, -1, 3).astype(np.float32))
        tol = mean_feature_variance(X) * 1e-4
        res = {"k-means||": ([], []), "k-means++": ([], [])}
        for s in range(args.seeds):
            for name in res:
                g = torch.Generator().manual_seed(s)
                t0 = time.perf_counter()
                if name == "k-means||":
                    c = kmeans_parallel(X, args.k, None, g, torch.float32, coreset_size=args.coreset_size)
                else:
                    c, _ = kmeans_plusplus(X, args.k, None, g, torch.float32)
                res[name][1].append(time.perf_counter() - t0)
                res[name][0].append(float(lloyd_from(X, c, None, max_iter=300, tol=tol).inertia[0]))
        r = np.mean(res["k-means||"][0]) / np.mean(res["k-means++"][0])
        ratios.append(r)
        print(
            f"{path.name}: inertia ratio k-means||/k-means++ {r:.4f}; init time k-means|| "
            f"{np.mean(res['k-means||'][1]):.3f} s, k-means++ {np.mean(res['k-means++'][1]):.3f} s"
        )
    print(f"mean ratio over photos: {np.mean(ratios):.4f} (max {np.max(ratios):.4f})")


if __name__ == "__main__":
    main()
