"""Whole fits on the CPU with and without Hamerly's bounds, against scikit-learn's Lloyd and Elkan, same init.

    python benchmarks/bounds.py                    # 1024x1024 photo, K = 8, 16 and 64, up to 100 iterations
    python benchmarks/bounds.py --json out.json    # also write the figures

Data and init as in ``benchmarks/cpu_lloyd.py`` (a photo resized to side x side, float32 pixels; scikit-learn's
k-means++ on a subsample, the same explicit centers for everyone). Each implementation runs a whole fit with
``tol=0`` and ``max_iter`` (so it stops when no label changes, or at ``max_iter``); the time is divided by the
iterations it ran. Round-robin repeats, the minimum reported. The script checks that pixelkm's two algorithms ran
the same number of iterations and reports how many final labels differ between them (float32 ties only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_lloyd  # the machine description

from benchmarks import common


def fits(X: np.ndarray, k: int, centers: np.ndarray, max_iter: int):
    from sklearn.cluster import KMeans

    import pixelkm

    def ours(algorithm):
        def run():
            km = pixelkm.KMeans(k, init=centers, tol=0.0, max_iter=max_iter, algorithm=algorithm).fit(X)
            return km.n_iter_, km.labels_, km.inertia_

        return run

    def theirs(algorithm):
        def run():
            km = KMeans(k, init=centers, n_init=1, tol=0.0, max_iter=max_iter, algorithm=algorithm).fit(X)
            return km.n_iter_, km.labels_, float(km.inertia_)

        return run

    return {
        "pixelkm lloyd": ours("lloyd"),
        "pixelkm hamerly": ours("hamerly"),
        "sklearn lloyd": theirs("lloyd"),
        "sklearn elkan": theirs("elkan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--photo", default=common.PHOTO)
    ap.add_argument("--k", type=int, nargs="+", default=[8, 16, 64])
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    X = common.photo_pixels(args.side, "float32", args.photo)
    info = cpu_lloyd.machine_info()
    print(f"{info['date_utc']}, {info['cpu']}, {info['cores']} cores, load {info['load_avg_1min']}, {info['versions']}")
    print(f"{args.photo} at {args.side}x{args.side} ({len(X):,} px, float32), tol=0, max_iter={args.max_iter}")
    print(f"{'K':>4} {'implementation':<16} {'iter':>5} {'ms/iter':>9} {'x pixelkm lloyd':>16} {'x sklearn lloyd':>16}")
    rows = []
    for k in args.k:
        centers = common.initial_centers(X, k)
        runs = fits(X, k, centers, args.max_iter)
        best = {name: float("inf") for name in runs}
        out = {}
        for _ in range(args.repeat):
            for name, run in runs.items():
                t0 = time.perf_counter()
                out[name] = run()
                best[name] = min(best[name], time.perf_counter() - t0)
        per_iter = {name: best[name] / out[name][0] for name in runs}
        n_lloyd, n_bounds = out["pixelkm lloyd"][0], out["pixelkm hamerly"][0]
        if n_lloyd != n_bounds:
            raise SystemExit(f"K={k}: lloyd ran {n_lloyd} iterations, hamerly {n_bounds}")
        differ = int((np.asarray(out["pixelkm lloyd"][1]) != np.asarray(out["pixelkm hamerly"][1])).sum())
        for name in runs:
            row = {
                "k": k,
                "impl": name,
                "n_iter": int(out[name][0]),
                "ms_per_iter": per_iter[name] * 1e3,
                "vs_pixelkm_lloyd": per_iter[name] / per_iter["pixelkm lloyd"],
                "vs_sklearn_lloyd": per_iter[name] / per_iter["sklearn lloyd"],
                "inertia": out[name][2],
            }
            rows.append(row)
            print(
                f"{k:>4} {name:<16} {row['n_iter']:>5} {row['ms_per_iter']:>9.2f} {row['vs_pixelkm_lloyd']:>15.2f}x "
                f"{row['vs_sklearn_lloyd']:>15.2f}x"
            )
        print(
            f"K={k}: pixelkm lloyd / hamerly = {per_iter['pixelkm lloyd'] / per_iter['pixelkm hamerly']:.2f}x; "
            f"final labels differing between them: {differ} of {len(X):,}"
        )
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "machine": info, "rows": rows}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
