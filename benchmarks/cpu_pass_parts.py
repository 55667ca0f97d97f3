"""The choices inside the torch backend's CPU pass, each timed against its alternative in the same run.

    python benchmarks/cpu_pass_parts.py

1. The distance to the chosen center, n = 2^20 points, d = 3: gathering center rows (``index_select`` of (k, d))
   against one 1-D gather per feature.
2. The per-cluster sums in float64: ``index_add_`` of (n, d) rows against ``scatter_add_`` along the last
   dimension of the (d, n) copy the backend keeps.
3. The nearest value and "the nearest out of the way" in a (1, r, k) distance block: ``gather``/``scatter_``
   against ``index_select``/``index_fill_`` with linear indices.
4. Whole fits (``algorithm="lloyd"``, 10 iterations, 1024x1024 photo, K = 8 and 64) with 2 MiB blocks of at most
   2^16 rows (the earlier setting) against the current 8 MiB and 2^18.

Every case is the minimum over round-robin repeats, both sides in the same run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks import common


def best_ms(fns: dict, repeat: int = 7) -> dict:
    times = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - t0)
    return {name: t * 1e3 for name, t in times.items()}


def report(title: str, times: dict) -> None:
    (a, ta), (b, tb) = times.items()
    print(f"{title}: {a} {ta:.2f} ms, {b} {tb:.2f} ms -> {ta / tb:.2f}x")


def main() -> None:
    g = torch.Generator().manual_seed(0)
    n, d = 1 << 20, 3
    x = torch.rand(n, d, generator=g) * 255
    for k in (8, 64):
        c = torch.rand(k, d, generator=g) * 255
        lab = torch.randint(0, k, (n,), generator=g)
        cols = c.t().contiguous()

        def rows(c=c, lab=lab):
            return (x - c.index_select(0, lab)).square_().sum(1)

        def by_feature(cols=cols, lab=lab):
            total = torch.zeros(n)
            for j in range(d):
                diff = x[:, j] - cols[j].index_select(0, lab)
                total.addcmul_(diff, diff)
            return total

        torch.testing.assert_close(rows(), by_feature())
        report(f"1. distance to the chosen center, k={k}", best_ms({"row gather": rows, "per feature": by_feature}))

        src = x.double().t().contiguous()

        def index_add(k=k, lab=lab):
            return torch.zeros(k, d, dtype=torch.float64).index_add_(0, lab, x.double())

        def scatter(k=k, lab=lab, src=src):
            return torch.zeros(d, k, dtype=torch.float64).scatter_add_(1, lab.expand(d, n), src)

        torch.testing.assert_close(index_add(), scatter().t())
        report(f"2. float64 sums, k={k}", best_ms({"index_add_ of rows": index_add, "scatter_add_ (d, n)": scatter}))

        r = 1 << 15
        block = torch.rand(1, r, k, generator=g)
        blab = torch.randint(0, k, (1, r), generator=g)
        lin = torch.arange(r) * k

        def gather_scatter(block=block, blab=blab):
            D = block.clone()
            v = D.gather(2, blab.unsqueeze(-1))
            D.scatter_(2, blab.unsqueeze(-1), torch.inf)
            return v

        def linear(block=block, blab=blab, lin=lin):
            D = block.clone()
            at = lin + blab[0]
            v = D.view(-1).index_select(0, at)
            D.view(-1).index_fill_(0, at, torch.inf)
            return v

        torch.testing.assert_close(gather_scatter().view(-1), linear())
        report(
            f"3. nearest value and knock-out, (1, {r}, {k}) block x 32",
            best_ms(
                {
                    "gather/scatter_": lambda: [gather_scatter() for _ in range(32)],
                    "index_select/index_fill_": lambda: [linear() for _ in range(32)],
                }
            ),
        )

    import pixelkm
    from pixelkm.backends import torch_backend as tb

    X = common.photo_pixels(1024, "float32")
    for k in (8, 64):
        C = common.initial_centers(X, k)

        def fit(block_mib, cap, k=k, C=C):
            def run():
                tb._CPU_BLOCK_BYTES, tb.ROW_CAP = block_mib << 20, 1 << cap
                pixelkm.KMeans(k, init=C, max_iter=10, tol=0, algorithm="lloyd").fit(X)

            return run

        saved = tb._CPU_BLOCK_BYTES, tb.ROW_CAP
        try:
            times = best_ms({"2 MiB, 2^16 rows": fit(2, 16), "8 MiB, 2^18 rows": fit(8, 18)}, repeat=6)
        finally:
            tb._CPU_BLOCK_BYTES, tb.ROW_CAP = saved
        report(f"4. 10-iteration fit ms, k={k}", times)


if __name__ == "__main__":
    main()
