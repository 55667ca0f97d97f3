"""One CPU pass on each thread count, interleaved, with or without another process spinning on one core.

    flock /tmp/pixelkm-bench.lock python benchmarks/cpu_threads.py [--load] [--passes 20]

Cases: n = 200,000 points around 16 blobs with d = 32, K = 16; n = 2^20 with d = 3, K = 64; n = 100,000 with
d = 256, K = 32 (float32, the centers k points of the data). Each count is fixed with ``PIXELKM_CPU_THREADS`` (the
thread tuner off), the counts alternate pass by pass, and the minimum, median and mean are printed in ms: what the
tuner of ``pixelkm/backends/cpu/threads.py`` chooses between (docs/cpu.md, "A busy core").
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np
import torch

CASES = {"d32-K16": (32, 16, 200_000), "d3-K64": (3, 64, 1 << 20), "d256-K32": (256, 32, 100_000)}


def _spin() -> None:
    while True:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--load", action="store_true", help="keep one core busy with a spinning process")
    p.add_argument("--passes", type=int, default=20)
    args = p.parse_args()
    import pixelkm.backends

    be = pixelkm.backends.get_backend("cpu")
    counts = sorted({1, torch.get_num_threads()}, reverse=True)
    load = mp.get_context("fork").Process(target=_spin, daemon=True) if args.load else None
    if load is not None:
        load.start()
    try:
        print(f"load={args.load} loadavg={os.getloadavg()} counts={counts}")
        for name, (d, k, n) in CASES.items():
            rng = np.random.default_rng(0)
            cen = rng.normal(size=(16, d)).astype(np.float32) * 3
            X = torch.from_numpy((cen[rng.integers(0, 16, n)] + rng.normal(size=(n, d))).astype(np.float32))
            C = X[torch.from_numpy(rng.choice(n, k, replace=False))].clone()
            Xt, Ct = X.unsqueeze(0), C.unsqueeze(0)
            be.assign_update(Xt, Ct, None, compute_distances=False)  # compile / load the kernel
            res = {t: [] for t in counts}
            for _ in range(args.passes):
                for t in counts:
                    os.environ["PIXELKM_CPU_THREADS"] = str(t)
                    t0 = time.perf_counter()
                    be.assign_update(Xt, Ct, None, compute_distances=False)
                    res[t].append((time.perf_counter() - t0) * 1e3)
            os.environ.pop("PIXELKM_CPU_THREADS", None)
            cells = "  ".join(
                f"{t} threads min {min(v):.2f} median {np.median(v):.2f} mean {np.mean(v):.2f}" for t, v in res.items()
            )
            print(f"{name:9s} {cells}", flush=True)
    finally:
        if load is not None:
            load.terminate()


if __name__ == "__main__":
    main()
