"""Seconds per Lloyd iteration on the CPU: pixelkm (torch backend) against scikit-learn, same data, same init.

    python benchmarks/cpu_lloyd.py                 # 1024x1024 photo, K = 8 and 64 (under a minute on 2 cores
                                                   # once pixelkm is near scikit-learn's speed)
    python benchmarks/cpu_lloyd.py --memory        # also: peak extra memory of assign_update, n = 16M, k = 256
    python benchmarks/cpu_lloyd.py --json out.json # also write the figures as JSON

Data: a test photograph resized (bicubic) to 1024x1024, its 1,048,576 RGB pixels as float32 (values 0..255).
Init: scikit-learn's k-means++ on a seeded 65,536-pixel subsample, the same explicit centers for everyone.
What is timed, for every implementation alike: one whole fit with ``tol=0, max_iter=N`` from those centers
(validation, N assign+update passes, the final labelling pass, the inertia), divided by N. The script fails if
an implementation ran fewer than N iterations. Each fit is repeated round-robin (pixelkm, scikit-learn, naive,
pixelkm, ...) and the minimum is reported, with every repeat listed; the ratio is pixelkm's minimum over
scikit-learn's. The naive row is a textbook torch loop: full ``cdist`` matrix, ``argmin``, ``index_add_``.

``--memory`` runs ``assign_update`` once on n = 16M random float32 points (d = 3, 192 MiB) with k = 256 in a
fresh subprocess, and reports the growth of its peak resident memory (VmHWM, reset through
/proc/self/clear_refs after the input is built and torch is warmed up) over its resident memory before the call.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks import common  # the asv suite's helpers, shared with this script

IMPLS = {"pixelkm": "torch-cpu", "sklearn": "sklearn", "naive": "naive-cpu"}


def machine_info() -> dict:
    """What the figures depend on: CPU, cores, thread counts, versions, BLAS/OpenMP settings."""
    import numpy as np
    import sklearn
    import threadpoolctl
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    pools = threadpoolctl.threadpool_info()
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "torch_threads": torch.get_num_threads(),
        "threadpools": sorted({f"{p['internal_api']}:{p['num_threads']}" for p in pools}),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "sklearn": sklearn.__version__,
            "pixelkm": _pixelkm_version(),
        },
        "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_", "PIXELKM_"))},
    }


def _pixelkm_version() -> str:
    import pixelkm

    rev = "?"
    try:
        rev = subprocess.run(
            ["git", "-C", str(common.REPO), "describe", "--always", "--dirty"],
            check=False,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        pass
    return f"{pixelkm.__version__} ({rev}, {Path(pixelkm.__file__).parent})"


def measure(X, ks: list[int], impls: list[str], iters: int, repeat: int, budget: float, seed: int = 0) -> list[dict]:
    """One row per (K, implementation) on the points X: seconds per iteration (min over round-robin repeats),
    every repeat, the inertia, and the ratios to scikit-learn's time and inertia when it is among ``impls``."""
    rows = []
    for k in ks:
        centers = common.initial_centers(X, k, seed=seed)
        runs = {}
        for label in impls:
            impl = IMPLS[label]
            common.check_impl(impl)
            Xd = common.to_device(X, impl)
            common.fixed_iteration_fit(impl, k, centers, 1)(Xd)  # warm-up: thread pools, allocator, dispatch
            fit = common.fixed_iteration_fit(impl, k, centers, iters)
            runs[label] = lambda fit=fit, Xd=Xd: fit(Xd)
        timed = common.interleaved_times(runs, repeat, budget)
        base = min(timed["sklearn"][0]) / iters if "sklearn" in timed else None
        ref_inertia = timed["sklearn"][1].inertia if "sklearn" in timed else None
        for label, (times, res) in timed.items():
            common.check_iterations(label, res, iters)
            per_iter = min(times) / iters
            rows.append(
                {
                    "k": k,
                    "impl": label,
                    "n": len(X),
                    "iters": iters,
                    "s_per_iter": per_iter,
                    "repeats_s_per_iter": [t / iters for t in times],
                    "ratio_to_sklearn": None if base is None else per_iter / base,
                    "inertia": res.inertia,
                    "inertia_rel_diff_to_sklearn": None if ref_inertia is None else res.inertia / ref_inertia - 1,
                }
            )
    return rows


def lloyd_figures(args: argparse.Namespace) -> list[dict]:
    X = common.photo_pixels(args.side, "float32", args.photo)
    return measure(X, args.k, args.impls, args.iters, args.repeat, args.budget, args.seed)


def print_lloyd(rows: list[dict], args: argparse.Namespace) -> None:
    n = rows[0]["n"]
    print(
        f"\nLloyd on {args.photo} at {args.side}x{args.side} ({n:,} px, float32, d=3), {args.iters} iterations, "
        f"tol=0, same k-means++ init; min over round-robin repeats"
    )
    print(f"{'K':>4} {'impl':<8} {'s/iter':>9} {'x sklearn':>10} {'inertia':>14} {'rel.diff':>9}  repeats s/iter")
    for r in rows:
        ratio = "" if r["ratio_to_sklearn"] is None else f"{r['ratio_to_sklearn']:.2f}x"
        diff = "" if r["inertia_rel_diff_to_sklearn"] is None else f"{r['inertia_rel_diff_to_sklearn']:+.1e}"
        reps = " ".join(f"{t:.4f}" for t in r["repeats_s_per_iter"])
        print(f"{r['k']:>4} {r['impl']:<8} {r['s_per_iter']:>9.4f} {ratio:>10} {r['inertia']:>14.6g} {diff:>9}  {reps}")
    for k in args.k:
        r = next((r for r in rows if r["k"] == k and r["impl"] == "pixelkm"), None)
        if r is not None and r["ratio_to_sklearn"] is not None:
            verdict = "meets" if r["ratio_to_sklearn"] <= args.target else "misses"
            print(f"K={k}: pixelkm/sklearn = {r['ratio_to_sklearn']:.2f}x, {verdict} the target <= {args.target}x")


# -- peak memory of assign_update -------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def memory_child(n: int, k: int, d: int, compute_labels: bool) -> None:
    """Runs in a fresh process: build the input, warm up, reset the peak, run assign_update once, print JSON."""
    import time

    import torch

    import pixelkm

    g = torch.Generator().manual_seed(0)
    pixelkm.assign_update(torch.rand(4096, d, generator=g), torch.rand(k, d, generator=g), backend="torch")
    X = torch.rand(n, d, generator=g) * 255  # float32 from the start: no float64 temporary
    C = X[torch.randint(0, n, (k,), generator=g)].clone()
    rss0 = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current VmRSS
        f.write("5")
    t0 = time.perf_counter()
    res = pixelkm.assign_update(X, C, backend="torch", compute_labels=compute_labels)
    seconds = time.perf_counter() - t0
    hwm = _status_kib("VmHWM")
    outputs = sum(
        t.numel() * t.element_size() for t in (res.labels, res.min_sq_dist, res.sums, res.counts) if t is not None
    )
    print(
        json.dumps(
            {
                "n": n,
                "k": k,
                "d": d,
                "compute_labels": compute_labels,
                "seconds": seconds,
                "input_mib": X.numel() * X.element_size() / 2**20,
                "outputs_mib": outputs / 2**20,
                "peak_extra_mib": (hwm - rss0) / 1024,
                "rss_before_mib": rss0 / 1024,
            }
        )
    )


def memory_figures(args: argparse.Namespace) -> list[dict]:
    """Both children at once: each measures its own peak resident memory, which the other does not change (their
    seconds are then taken side by side: the main table has the times)."""
    procs = []
    for labels in (True, False):
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            str(args.memory_n),
            str(args.memory_k),
            "3",
            str(int(labels)),
        ]
        procs.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)))
    rows = []
    for cmd, proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, cmd, out)
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def print_memory(rows: list[dict]) -> None:
    print("\nPeak extra memory of assign_update (torch backend, CPU), fresh process, growth of VmHWM over VmRSS:")
    print(f"{'n':>10} {'k':>4} {'labels':>6} {'input MiB':>9} {'outputs MiB':>11} {'peak extra MiB':>14} {'s':>7}")
    for r in rows:
        print(
            f"{r['n']:>10,} {r['k']:>4} {r['compute_labels']!s:>6} {r['input_mib']:>9.0f} "
            f"{r['outputs_mib']:>11.1f} {r['peak_extra_mib']:>14.1f} {r['seconds']:>7.2f}"
        )
    worst = max(r["peak_extra_mib"] for r in rows)
    print(f"worst peak beyond the input: {worst:.0f} MiB ({'under' if worst < 1024 else 'OVER'} the 1 GiB limit)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[8, 64], help="cluster counts (default: 8 64)")
    p.add_argument("--iters", type=int, default=5, help="Lloyd iterations per fit (default: 5)")
    p.add_argument("--repeat", type=int, default=3, help="fits per implementation, round-robin (default: 3)")
    p.add_argument("--budget", type=float, default=15.0, help="seconds per K after which repeats stop (default: 15)")
    p.add_argument("--side", type=int, default=1024, help="photo resized to side x side (default: 1024)")
    p.add_argument("--photo", default=common.PHOTO, help=f"file in {common.IMAGES} (default: {common.PHOTO})")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS), help="default: all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="limit torch and BLAS/OpenMP threads (default: as they are)")
    p.add_argument("--target", type=float, default=1.5, help="ratio pixelkm/sklearn to meet (default: 1.5)")
    p.add_argument("--memory", action="store_true", help="also measure assign_update's peak memory at n = 16M")
    p.add_argument("--memory-only", action="store_true", help="only the memory measurement")
    p.add_argument("--memory-n", type=int, default=1 << 24, help="points for --memory (default: 16777216)")
    p.add_argument("--memory-k", type=int, default=256, help="centers for --memory (default: 256)")
    p.add_argument("--json", type=Path, help="also write machine info and figures to this JSON file")
    p.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        n, k, d, labels = (int(v) for v in args.memory_child)
        memory_child(n, k, d, bool(labels))
        return 0
    if args.threads:
        import sklearn.cluster  # noqa: F401  (load its OpenMP runtime first: limits reach loaded libraries only)
        import threadpoolctl
        import torch

        torch.set_num_threads(args.threads)
        threadpoolctl.threadpool_limits(args.threads)
    info = machine_info()
    print(
        f"{info['date_utc']}  {info['cpu']}, {info['cores']} cores, load {info['load_avg_1min']}, "
        f"torch threads {info['torch_threads']}, pools {', '.join(info['threadpools'])}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"env: {info['env'] or 'no OPENBLAS_/OMP_/MKL_/PIXELKM_ variables set'}")
    out = {
        "command": " ".join(["python", "benchmarks/cpu_lloyd.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": info,
    }
    if not args.memory_only:
        out["lloyd"] = lloyd_figures(args)
        print_lloyd(out["lloyd"], args)
    if args.memory or args.memory_only:
        out["memory"] = memory_figures(args)
        print_memory(out["memory"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
