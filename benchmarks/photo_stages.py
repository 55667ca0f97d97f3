"""Where the time of one ``pixelkm`` command goes on a 12-megapixel photo, stage by stage.

Each command runs in a fresh process with timers wrapped around the functions that make its stages (decode,
color histogram, features, k-means++ init, Lloyd, label remap, palette image, encode and write); "python" is the
wall time of ``python -c pass``, "import" that of ``import pixelkm.cli, pixelkm.image`` (what the command line
pays before any work), "wall" the whole process. Stages nest (init and lloyd are inside fit), so they do not
add up; "other" is wall - python - import - the outermost stages. The child imports pixelkm before the command
starts, so the command's overlap of its input's decode with those imports does not show here ("decode" is the
whole decode): benchmarks/photo_commands.py gives the command's own wall time.

    python benchmarks/photo_stages.py [--photo kodim05.png] [--only quantize16,remove-bg] [--repeat 2]

Run one benchmark at a time: ``flock /tmp/pixelkm-bench.lock python benchmarks/photo_stages.py``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_commands import COMMANDS, build_photo  # noqa: E402

#: stage name -> "module:attribute" (a function or "Class.method") wrapped with a timer; the outermost
#: stages (those that do not nest in another) are marked with a "*"
STAGES = {
    "decode*": "pixelkm.image._io:load_image",
    "histogram": "pixelkm.engine.histogram:color_histogram",
    "features": "pixelkm.image._common:color_features",
    "fit": "pixelkm.image._common:fit_colors",
    "KMeans.fit": "pixelkm.estimators.kmeans:KMeans.fit",
    "init": "pixelkm.engine.init:kmeans_plusplus",
    "init+lloyd": "pixelkm.engine.batched:fit",
    "quantize*": "pixelkm.image._quantize:quantize",
    "remap": "pixelkm.image._quantize:pixel_labels",
    "segment*": "pixelkm.image._segment:segment",
    "remove_bg*": "pixelkm.image._background:remove_background",
    "choose_k*": "pixelkm.image._choose_k:choose_k",
    "palette*": "pixelkm.image._palette:palette",
    "to_pil*": "pixelkm.image._quantize:QuantizeResult.to_pil",
    "save*": "pixelkm.image._io:save_pil",
}


def _wrap(spec: str, name: str, spent: dict) -> None:
    mod_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError:
        return
    owner, _, meth = attr.rpartition(".")
    holder = getattr(mod, owner) if owner else mod
    if not hasattr(holder, meth or attr):
        return
    key = meth or attr
    fn = getattr(holder, key)

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

    setattr(holder, key, timed)
    # modules that imported the function by name (``from ._io import load_image``) see the wrapped one too
    if not owner:
        for m in list(sys.modules.values()):
            if m is not None and m is not mod and getattr(m, key, None) is fn and m.__name__.startswith("pixelkm"):
                setattr(m, key, timed)


def _child(argv: list[str], report: str) -> None:
    t0 = time.perf_counter()
    import pixelkm.cli as cli
    import pixelkm.image  # noqa: F401  (what every command imports)

    t_import = time.perf_counter() - t0
    spent: dict[str, float] = {}
    for name, spec in STAGES.items():
        _wrap(spec, name.rstrip("*"), spent)
    t1 = time.perf_counter()

    def report_then_exit(code: int, _exit=cli._exit_now) -> None:
        spent["run"] = time.perf_counter() - t1
        spent["import"] = t_import
        Path(report).write_text(json.dumps({"code": code, **spent}))
        _exit(code)

    # as the ``pixelkm`` command runs: main() with sys.argv, ending through cli._exit_now (no tear-down)
    cli._exit_now = report_then_exit
    sys.argv = ["pixelkm", *argv, *(["--quiet"] if argv[0] == "choose-k" else ["--quiet", "--force"])]
    report_then_exit(cli.main())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photo", default="kodim05.png")
    p.add_argument("--only", default="quantize16,quantize16-lab,quantize256,segment8,remove-bg,choose-k")
    p.add_argument("--repeat", type=int, default=1, help="runs per command; the table shows each stage's minimum")
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(a.child[1:], a.child[0])
        return
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, load {load}, photo {a.photo} at 4000x3000")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    py = time.perf_counter() - t0
    names = [n.rstrip("*") for n in STAGES]
    cols = ["wall", "python", "import"] + names + ["other"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src = build_photo(a.photo, folder)
        print(f"{'command':16s} " + " ".join(f"{c[:9]:>9s}" for c in cols))
        for row in a.only.split(","):
            best: dict[str, float] = {}
            for _ in range(a.repeat):
                report = folder / f"{row}.json"
                argv = [t.format(src=src, out=folder) for t in COMMANDS[row]]
                t0 = time.perf_counter()
                subprocess.run([sys.executable, __file__, "--child", str(report), *argv], check=True)
                wall = time.perf_counter() - t0
                d = json.loads(report.read_text())
                d["wall"], d["python"] = wall, py
                outer = sum(d.get(n.rstrip("*"), 0.0) for n in STAGES if n.endswith("*"))
                d["other"] = wall - py - d["import"] - outer
                for c in cols:
                    if c in d:
                        best[c] = min(best.get(c, float("inf")), d[c])
            print(f"{row:16s} " + " ".join(f"{best[c]:9.2f}" if c in best else f"{'-':>9s}" for c in cols))
    print(f"# load after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
