"""One pass of the cpu backend's small-d kernel (labels and sums, no distances) against the number of centers.

    flock /tmp/pixelkm-bench.lock python benchmarks/cpu_pass_k.py [--ks 1,2,4,8,16,32,64,256] [--repeats 5]

The data is the 12 MP photo's exact color histogram (``cpu_init.py``'s: 960,825 distinct colors weighted by their
counts, float32, in key order), as ``pixelkm quantize`` and ``choose-k`` fit it; the centers are K distinct colors
drawn with a fixed seed. The Ks alternate within each repeat and the minimum is printed, in ms and in ns per color
per thread. A pass costs a fixed part per point (the tile's transposition, the label, the weighted float64 sums) and
a part per point and center (the scan): a pass that gets slower with fewer centers is a defect (it was false sharing
of the per-block partials, 2026-12-03: docs/cpu.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_init import colors_12mp  # noqa: E402

from benchmarks import common  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", default="1,2,4,8,16,32,64,256")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    import pixelkm.backends
    from pixelkm.backends.cpu.threads import pass_threads

    colors, weights = colors_12mp()
    X = torch.from_numpy(colors).float()[None]
    w = torch.from_numpy(weights)[None]
    n = X.shape[1]
    be = pixelkm.backends.get_backend("cpu")
    rng = np.random.default_rng(0)
    ks = [int(k) for k in a.ks.split(",")]
    centers = {k: X[:, torch.from_numpy(rng.choice(n, k, replace=False))].clone() for k in ks}
    cache: dict = {}

    def one_pass(C):
        return lambda: be.assign_update(X, C, w, compute_distances=False, cache=cache)

    runs = {k: one_pass(C) for k, C in centers.items()}
    for run in runs.values():  # warm-up (compiles on a first run)
        run()
    timed = common.interleaved_times(runs, a.repeats, budget_s=float("inf"))
    best = {k: min(times) for k, (times, _) in timed.items()}
    nt = pass_threads()
    print(f"# {n} weighted colors, d = 3, {nt} threads; min of {a.repeats}")
    for k in ks:
        print(f"K={k:<5d} {1e3 * best[k]:7.2f} ms  {1e9 * best[k] * nt / n:6.2f} ns per color per thread")


if __name__ == "__main__":
    main()
