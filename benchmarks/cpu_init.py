"""Seconds of greedy k-means++ alone on the CPU: pixelkm's kernel against scikit-learn's ``kmeans_plusplus``.

    flock /tmp/pixelkm-bench.lock python benchmarks/cpu_init.py [--repeats 2] [--cases colors-K256,d128-K1024]

Cases: the 12 MP photo's exact color histogram (kodim05 resized to 4000x3000: 960,825 distinct colors weighted by
their counts, as ``pixelkm quantize`` seeds them) with K = 16, 64, 256; ``cpu_peers.py``'s d = 128 blobs (n =
100,000, float32) with K = 64 and 1024. Both draw 2 + log(K) local trials per center (scikit-learn's rule), seeded;
the draws differ (different random streams), the work does not. The repeats alternate (A B A B) and the minimum is
printed; the ratio is pixelkm over scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_commands import IMAGES  # noqa: E402

from benchmarks import common  # noqa: E402


def colors_12mp() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    from pixelkm.engine.histogram import color_histogram

    with Image.open(IMAGES / "kodim05.png") as im:
        px = np.asarray(im.convert("RGB").resize((4000, 3000), Image.LANCZOS)).reshape(-1, 3)
    h = color_histogram(torch.from_numpy(px.copy()), inverse=False)
    return h.colors.numpy(), h.weights.float().numpy()


def blobs_d128() -> np.ndarray:
    rng = np.random.default_rng(0)  # as cpu_peers.py's d128 case
    blobs = rng.normal(size=(64, 128)).astype(np.float32) * 4
    return (blobs[rng.integers(0, 64, 100_000)] + rng.normal(size=(100_000, 128)).astype(np.float32)).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cases", default=None, help="comma-separated (default: all)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    from sklearn.cluster import kmeans_plusplus

    from pixelkm.engine.init import kmeans_plusplus as pk_plusplus

    colors, weights = colors_12mp()
    big = blobs_d128()
    cases = {f"colors-K{k}": (colors, weights, k) for k in (16, 64, 256)}
    cases.update({f"d128-K{k}": (big, None, k) for k in (64, 1024)})
    if a.cases:
        cases = {k: v for k, v in cases.items() if k in a.cases.split(",")}
    info = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": os.getloadavg()}
    print(json.dumps(info), flush=True)
    rows = {}
    for name, (X, w, k) in cases.items():
        Xt = torch.from_numpy(X)[None]
        wt = None if w is None else torch.from_numpy(w)[None]
        Xf = X.astype(np.float32)  # scikit-learn's float32 path (uint8 colors converted once, outside the timing)

        calls = {
            "pixelkm": lambda Xt=Xt, wt=wt, k=k: pk_plusplus(
                Xt, k, wt, torch.Generator().manual_seed(0), torch.float32
            ),
            "sklearn": lambda Xf=Xf, w=w, k=k: kmeans_plusplus(Xf, k, sample_weight=w, random_state=0),
        }
        pk_plusplus(Xt[:, :4096], 2, None if wt is None else wt[:, :4096], torch.Generator(), torch.float32)  # compile
        times = {impl: ts for impl, (ts, _) in common.interleaved_times(calls, a.repeats, float("inf")).items()}
        best = {i: min(v) for i, v in times.items()}
        rows[name] = {"s": best, "all": times, "ratio": best["pixelkm"] / best["sklearn"]}
        print(
            f"{name:14s} pixelkm {best['pixelkm']:8.3f} s  sklearn {best['sklearn']:8.3f} s  "
            f"ratio {rows[name]['ratio']:.2f}x",
            flush=True,
        )
    info["loadavg_end"] = os.getloadavg()
    print(json.dumps({"loadavg_end": info["loadavg_end"]}))
    if a.json:
        Path(a.json).write_text(json.dumps({"info": info, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
