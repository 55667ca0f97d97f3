"""Time per Lloyd iteration against n on the CPU, pixelkm against scikit-learn (and the naive torch loop).

    python benchmarks/plot_results.py                       # measure (a few minutes on 2 cores) and plot
    python benchmarks/plot_results.py --from-json docs/time_per_iter.json   # plot again without measuring

The measurement is ``benchmarks/cpu_lloyd.py``'s, repeated for photographs resized to side x side pixels
(n = side^2): same explicit init, ``tol=0``, a fixed number of iterations, round-robin repeats, minimum
reported. Writes the figures as JSON (with the command, the date and the machine) and the plot as PNG; the
plot's footnote carries the same command, date and machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_lloyd  # the same measurement and machine description as the CPU comparison script

from benchmarks import common

DOCS = common.REPO / "docs"
STYLE = {"pixelkm": ("C0", "o", "-"), "sklearn": ("C1", "s", "-"), "naive": ("C2", "^", "--")}


def measure(args: argparse.Namespace) -> dict:
    info = cpu_lloyd.machine_info()
    rows = []
    for side in args.sides:
        X = common.photo_pixels(side, "float32", args.photo)
        rows += cpu_lloyd.measure(X, args.k, args.impls, args.iters, args.repeat, args.budget, args.seed)
        print(
            f"side {side}: "
            + ", ".join(
                f"{r['impl']}@K={r['k']} {r['s_per_iter']:.4f}s" for r in rows[-len(args.k) * len(args.impls) :]
            )
        )
    return {"command": "python benchmarks/plot_results.py " + " ".join(sys.argv[1:]), "machine": info, "rows": rows}


def plot(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, info = data["rows"], data["machine"]
    ks = sorted({r["k"] for r in rows})
    fig, axes = plt.subplots(1, len(ks), figsize=(5.2 * len(ks), 4.4), squeeze=False, sharey=True)
    for ax, k in zip(axes[0], ks):
        for impl in [i for i in STYLE if any(r["impl"] == i for r in rows)]:
            pts = sorted((r["n"], r["s_per_iter"]) for r in rows if r["k"] == k and r["impl"] == impl)
            color, marker, ls = STYLE[impl]
            label = {"pixelkm": "pixelkm (torch, CPU)", "sklearn": "scikit-learn", "naive": "naive torch"}[impl]
            ax.loglog(*zip(*pts), marker=marker, ls=ls, color=color, label=label)
        ax.set_title(f"K = {k}, d = 3 (RGB pixels, float32)")
        ax.set_xlabel("n (pixels)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("seconds per Lloyd iteration (min of repeats)")
    axes[0][0].legend()
    foot = (
        f"{data['command']}  |  {info['date_utc']}  |  {info['cpu']}, {info['cores']} cores, "
        f"torch {info['versions']['torch']}, scikit-learn {info['versions']['sklearn']}, "
        f"load {info['load_avg_1min']} (shared machine: preliminary)"
    )
    fig.text(0.01, 0.01, foot, fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sides", type=int, nargs="+", default=[128, 256, 512, 1024], help="photo sides (n = side^2)")
    p.add_argument("--k", type=int, nargs="+", default=[8, 64])
    p.add_argument("--impls", nargs="+", default=list(cpu_lloyd.IMPLS), choices=list(cpu_lloyd.IMPLS))
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--budget", type=float, default=10.0, help="seconds per (side, K) after which repeats stop")
    p.add_argument("--photo", default=common.PHOTO)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DOCS / "time_per_iter.png", help="PNG; the JSON goes beside it")
    p.add_argument("--from-json", type=Path, help="plot these figures instead of measuring")
    args = p.parse_args(argv)
    if args.from_json:
        data = json.loads(args.from_json.read_text())
    else:
        data = measure(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {args.out.with_suffix('.json')}")
    plot(data, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
