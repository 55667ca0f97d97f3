"""A 12-megapixel photo quantized to 16 colors: pixelkm's histogram-reduced fit against scikit-learn's KMeans.

The photo (4000 x 3000) is a photo of ../shared/images resized with Pillow's bicubic filter. Both fits are
end to end (init + Lloyd iterations + the label of every pixel), ``n_init=1``, k-means++, ``tol=1e-4``, in the
same process on the same threads; scikit-learn gets float32 pixels (what it computes in), pixelkm the uint8
pixels, through ``pixelkm.KMeans(...).fit``, which for uint8 input fits the exact color histogram: the distinct
colors with their counts as weights, ``tol`` relative to the pixels' variance, every pixel's label through the
inverse index. PSNR is that of the pixels against their (float) centers,
computed in float64 from the returned labels and centers.

faiss-cpu (where it imports) runs as its users run it: ``faiss.Kmeans`` with its defaults (25 iterations on a
subsample of ``max_points_per_centroid=256`` points per cluster, 4096 for k = 16), then every pixel's label by
``index.search``; scikit-learn-intelex (``--sklearnex``) as scikit-learn. ``--load`` keeps one core busy with a
spinning process for the whole run (a shared runner).

    python benchmarks/photo_12mp.py [--photo kodim05.png] [--seeds 3] [--threads N] [--load] [--sklearnex]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

#: ../shared/images from the main checkout (parents[2]) or from a worktree under /work/wt (parents[3])
IMAGES = next(
    (p / "shared" / "images" for p in Path(__file__).resolve().parents if (p / "shared" / "images").is_dir()),
    Path(__file__).resolve().parents[2] / "shared" / "images",
)


def psnr(mse: float) -> float:
    return float(10 * np.log10(255.0**2 / mse))


def build_photo(name: str) -> np.ndarray:
    from PIL import Image

    with Image.open(IMAGES / name) as im:
        return np.asarray(im.convert("RGB").resize((4000, 3000), Image.BICUBIC)).reshape(-1, 3).copy()


def fit_pixelkm(pixels: np.ndarray, k: int, seed: int, tol: float):
    import torch

    import pixelkm
    from pixelkm.engine.histogram import reduce_colors

    t0 = time.perf_counter()
    km = pixelkm.KMeans(k, random_state=seed, tol=tol, n_init=1).fit(pixels)  # the histogram fit, automatically
    seconds = time.perf_counter() - t0
    red = reduce_colors(torch.from_numpy(pixels), n_clusters=k)  # (outside the timing) how many distinct colors
    return seconds, km.inertia_, km.n_iter_, km.labels_, km.cluster_centers_, len(red.colors)


def fit_sklearn(pixels: np.ndarray, k: int, seed: int, tol: float):
    from sklearn.cluster import KMeans

    X = pixels.astype(np.float32)
    t0 = time.perf_counter()
    km = KMeans(k, n_init=1, init="k-means++", tol=tol, random_state=seed, algorithm="lloyd").fit(X)
    seconds = time.perf_counter() - t0
    return seconds, float(km.inertia_), int(km.n_iter_), km.labels_, km.cluster_centers_


def fit_faiss(pixels: np.ndarray, k: int, seed: int):
    import faiss

    t0 = time.perf_counter()
    X = pixels.astype(np.float32)
    km = faiss.Kmeans(3, k, seed=seed)  # its defaults: niter=25, max_points_per_centroid=256 (a subsample)
    km.train(X)
    _, lab = km.index.search(X, 1)
    seconds = time.perf_counter() - t0
    return seconds, lab[:, 0], km.centroids


def fit_sklearnex(pixels: np.ndarray, k: int, seed: int, tol: float):
    from sklearnex.cluster import KMeans

    X = pixels.astype(np.float32)
    t0 = time.perf_counter()
    km = KMeans(k, n_init=1, init="k-means++", tol=tol, random_state=seed, algorithm="lloyd").fit(X)
    return time.perf_counter() - t0, km.labels_, km.cluster_centers_


def _spin() -> None:  # pragma: no cover (the load process)
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", default="kodim05.png")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=None, help="torch and OpenMP threads for both (default: as set)")
    ap.add_argument("--load", action="store_true", help="keep one core busy with a spinning process")
    ap.add_argument("--sklearnex", action="store_true", help="also scikit-learn-intelex (slow: ~6 s a fit)")
    args = ap.parse_args()
    if args.load:
        import multiprocessing

        spinner = multiprocessing.Process(target=_spin, daemon=True)
        spinner.start()
    try:
        import faiss  # noqa: F401

        have_faiss = True
    except ImportError:
        have_faiss = False
    if args.threads:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    import torch

    pixels = build_photo(args.photo)
    n = len(pixels)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}; photo {args.photo} resized to 4000x3000 = {n} pixels, k={args.k}, tol={args.tol}"
        f"; load {os.getloadavg()[0]:.2f}{' + a spinning process' if args.load else ''}"
    )

    def mse_of(lab, c):
        return float(((pixels - np.asarray(c, dtype=np.float64)[lab]) ** 2).sum()) / (3 * n)

    others = {"faiss": [], "sklearnex": []}
    import pixelkm

    # (outside the timings) the first fit of a process loads the compiled kernels from numba's disk cache
    pixelkm.KMeans(args.k, random_state=0, n_init=1, max_iter=2).fit(pixels)  # (the histogram path's kernels)
    rows = []
    for seed in range(args.seeds):
        ts, _, it_s, lab_s, c_s = fit_sklearn(pixels, args.k, seed, args.tol)
        tp, _, it_p, lab_p, c_p, m = fit_pixelkm(pixels, args.k, seed, args.tol)
        # PSNR of both from the returned labels and centers, in float64 (scikit-learn's inertia_ is accumulated in
        # float32 and is off by ~0.3% at 12M pixels)
        mse = [
            float(((pixels - c.astype(np.float64)[lab]) ** 2).sum()) / (3 * n)
            for lab, c in ((lab_s, c_s), (lab_p, c_p))
        ]
        rows.append((seed, ts, tp, it_s, it_p, psnr(mse[0]), psnr(mse[1]), m))
        print(
            f"seed {seed}: sklearn {ts:7.2f} s ({it_s:3d} iter, PSNR {rows[-1][5]:.3f} dB) | pixelkm {tp:6.2f} s "
            f"({it_p:3d} iter on {m} distinct colors, PSNR {rows[-1][6]:.3f} dB) | speedup {ts / tp:5.1f}x",
            flush=True,
        )
        if have_faiss:
            tf, lab_f, c_f = fit_faiss(pixels, args.k, seed)
            others["faiss"].append((tf, mse_of(lab_f, c_f)))
            print(
                f"         faiss (subsampled) {tf:6.2f} s, PSNR {psnr(others['faiss'][-1][1]):.3f} dB, its MSE "
                f"{others['faiss'][-1][1] / mse[1] - 1:+.2%} vs pixelkm's | pixelkm / faiss {tp / tf:.2f}x",
                flush=True,
            )
        if args.sklearnex:
            tx, lab_x, c_x = fit_sklearnex(pixels, args.k, seed, args.tol)
            others["sklearnex"].append((tx, mse_of(lab_x, c_x)))
            print(f"         sklearnex {tx:6.2f} s, PSNR {psnr(others['sklearnex'][-1][1]):.3f} dB", flush=True)
    ts, tp = sum(r[1] for r in rows), sum(r[2] for r in rows)
    ps, pp = np.mean([r[5] for r in rows]), np.mean([r[6] for r in rows])
    print(
        f"total: sklearn {ts:.2f} s, pixelkm {tp:.2f} s, speedup {ts / tp:.1f}x; mean PSNR sklearn {ps:.3f} dB, "
        f"pixelkm {pp:.3f} dB (difference {pp - ps:+.3f} dB)"
    )
    for name, got in others.items():
        if got:
            t = sum(g[0] for g in got)
            print(
                f"total {name}: {t:.2f} s; pixelkm / {name} {tp / t:.2f}x; min per fit pixelkm "
                f"{min(r[2] for r in rows):.2f} s, {name} {min(g[0] for g in got):.2f} s"
            )


if __name__ == "__main__":
    main()
