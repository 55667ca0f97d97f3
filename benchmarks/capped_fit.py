"""What ``max_points_per_cluster`` (a fit on a uniform subsample) saves in time and costs in inertia.

Per case and seed, one after the other in one process: the full fit (``KMeans(k, random_state=seed)``, defaults:
k-means++, ``tol=1e-4``), the capped fit (the same with ``max_points_per_cluster=M``, labels and inertia of every
sample against its centers), and faiss's ``Kmeans`` with its defaults (25 iterations on a subsample of 256
points per centroid, then every sample's label by ``index.search``) where faiss imports. The inertia of each is
that of every sample against its centers, given relative to the full fit's of the same seed.

Cases: the 12 MP photo (kodim05 resized to 4000 x 3000, uint8 RGB, K = 16: the full fit runs on its exact color
histogram), 2,000,000 float32 points in 32 features around 64 Gaussian blobs (K = 64), and 500,000 in 128
features around 256 blobs (K = 256).

    python benchmarks/capped_fit.py [--seeds 2] [--cap 256] [--only photo,...]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

IMAGES = next(
    (p / "shared" / "images" for p in Path(__file__).resolve().parents if (p / "shared" / "images").is_dir()),
    Path(__file__).resolve().parents[2] / "shared" / "images",
)


def cases() -> dict:
    from PIL import Image

    with Image.open(IMAGES / "kodim05.png") as im:
        photo = np.asarray(im.convert("RGB").resize((4000, 3000), Image.LANCZOS)).reshape(-1, 3).copy()
    rng = np.random.default_rng(0)

    def blobs(n: int, d: int, k: int) -> np.ndarray:
        centers = rng.normal(size=(k, d)).astype(np.float32) * 3
        return (centers[rng.integers(0, k, n)] + rng.normal(size=(n, d)).astype(np.float32)).astype(np.float32)

    return {"photo": (photo, 16), "d32": (blobs(2_000_000, 32, 64), 64), "d128": (blobs(500_000, 128, 256), 256)}


def inertia_of(X: np.ndarray, centers: np.ndarray) -> float:
    """Inertia of every row against ``centers`` (float64 sums), through pixelkm's pass."""
    import torch

    from pixelkm.ops import run_assign_update

    Xt = torch.from_numpy(X)
    C = torch.from_numpy(np.ascontiguousarray(centers, dtype=np.float32))
    return float(run_assign_update(Xt[None], C[None], None).inertia(None)[0])


def fit_faiss(X: np.ndarray, k: int, seed: int):
    import faiss

    t0 = time.perf_counter()
    Xf = np.ascontiguousarray(X, dtype=np.float32)
    km = faiss.Kmeans(X.shape[1], k, seed=seed)
    km.train(Xf)
    km.index.search(Xf, 1)
    return time.perf_counter() - t0, km.centroids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--cap", type=int, default=256, help="max_points_per_cluster")
    ap.add_argument("--only", default=None, help="comma-separated cases: photo, d32, d128")
    a = ap.parse_args()
    import torch

    import pixelkm

    try:
        import faiss  # noqa: F401

        have_faiss = True
    except ImportError:
        have_faiss = False
    print(
        f"# {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"load {Path('/proc/loadavg').read_text().split()[:3]}; cap {a.cap}"
    )
    print(
        f"{'case':6s} {'seed':>4s} {'full s':>8s} {'capped s':>9s} {'faiss s':>8s} "
        f"{'capped inertia':>15s} {'faiss inertia':>14s}  (relative to the full fit's)"
    )
    wanted = None if a.only is None else set(a.only.split(","))
    for name, (X, k) in cases().items():
        if wanted is not None and name not in wanted:
            continue
        pixelkm.KMeans(k, random_state=99, max_iter=2).fit(X[:200_000])  # compile and warm the kernels
        for seed in range(a.seeds):
            t0 = time.perf_counter()
            full = pixelkm.KMeans(k, random_state=seed).fit(X)
            t_full = time.perf_counter() - t0
            t0 = time.perf_counter()
            cap = pixelkm.KMeans(k, random_state=seed, max_points_per_cluster=a.cap).fit(X)
            t_cap = time.perf_counter() - t0
            ref = inertia_of(X, full.cluster_centers_)
            rel_cap = inertia_of(X, cap.cluster_centers_) / ref - 1
            t_f, rel_f = float("nan"), float("nan")
            if have_faiss:
                t_f, cf = fit_faiss(X, k, seed)
                rel_f = inertia_of(X, cf) / ref - 1
            print(
                f"{name:6s} {seed:4d} {t_full:8.3f} {t_cap:9.3f} {t_f:8.3f} {rel_cap:+15.2e} {rel_f:+14.2e}", flush=True
            )
    print(f"# load after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
