"""Every ``pixelkm`` command on a 12-megapixel photo: wall time end to end, the k-means part, peak memory.

Each row is one fresh process (the ``pixelkm`` command's ``main()`` with a timer around ``KMeans.fit`` and the
image toolkit's color fit, put in as the command itself imports their modules), so the wall time includes Python
start-up and the imports, and the decode of the input that the command overlaps with them; "fit" is the time inside
them (init + Lloyd: what the CPU kernel speeds up), "rest" the remainder (start-up, load, histogram, labels,
painting, PNG encoding); peak is the process's maximum resident memory. Baselines in the same run, each a fresh process:

- scikit-learn ``KMeans`` (float32, n_init=1, k-means++, lloyd, same tol) fitted on the same exact color
  histogram (distinct colors weighted by their counts), as pixelkm does; the row gives the fit alone and the
  pipeline (load + histogram + fit + every pixel's label + palette PNG), so that pixelkm's end-to-end quantize
  compares with the same work;
- pngquant (the Debian package, ``--speed 4`` default, no dithering ``--nofs``) where installed;
- libimagequant through PyPI ``imagequant`` (load + quantize without dithering + save) where it imports.

The photo is ``--photo`` (Kodak, 768 x 512) resized to 4000 x 3000 with Pillow's LANCZOS filter, as
benchmarks/photo_12mp.py does. Run one benchmark at a time (``flock /tmp/pixelkm-bench.lock python ...``);
``--only`` picks rows so that each run stays short.

    python benchmarks/photo_commands.py [--photo kodim05.png] [--only quantize16,sklearn16,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: ../shared/images from the main checkout (parents[2]) or from a worktree under /work/wt (parents[3])
IMAGES = next(
    (p / "shared" / "images" for p in Path(__file__).resolve().parents if (p / "shared" / "images").is_dir()),
    Path(__file__).resolve().parents[2] / "shared" / "images",
)

#: row name -> pixelkm command line (input and output filled in)
COMMANDS = {
    "quantize16": ["quantize", "{src}", "-o", "{out}/q16.png", "-k", "16"],
    "quantize16-lab": ["quantize", "{src}", "-o", "{out}/q16lab.png", "-k", "16", "--features", "lab"],
    "quantize16-oklab": ["quantize", "{src}", "-o", "{out}/q16ok.png", "-k", "16", "--features", "oklab"],
    "quantize256": ["quantize", "{src}", "-o", "{out}/q256.png", "-k", "256"],
    "segment8": ["segment", "{src}", "-o", "{out}/seg.png", "-k", "8"],
    "remove-bg": ["remove-bg", "{src}", "-o", "{out}/bg.png"],
    "choose-k": ["choose-k", "{src}", "--json"],
    "palette6": ["palette", "{src}", "--json"],
}
BASELINES = ("sklearn16", "sklearn256", "pngquant16", "pngquant256", "imagequant16", "imagequant256")


def _after_import(name: str, patch) -> None:
    """Call ``patch(module)`` once module ``name`` is imported (by the command itself: the child imports nothing
    heavy before ``main()``, so that the command overlaps its input's decode with its imports as it does alone)."""
    import importlib.abc
    import importlib.util

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder())


def _child_pixelkm(argv: list[str], report: str) -> None:
    """Run the CLI with a timer around KMeans.fit; write {"fit": seconds} to ``report``."""
    spent = [0.0]
    depth = [0]

    def timer(fn):
        def timed(*a, **k):
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:  # (not twice when one timed call runs inside another)
                    spent[0] += time.perf_counter() - t0

        return timed

    def patch_kmeans(km) -> None:
        km.KMeans.fit = timer(km.KMeans.fit)

    def patch_common(common) -> None:  # the color fits: the engine's loop, no KMeans.fit
        common.fit_colors = timer(common.fit_colors)  # (imported by name after this module ran: they see it)

    _after_import("pixelkm.estimators.kmeans", patch_kmeans)
    _after_import("pixelkm.image._common", patch_common)
    from pixelkm import cli

    def report_then_exit(code: int, _exit=cli._exit_now) -> None:
        Path(report).write_text(json.dumps({"fit": spent[0], "code": code}))
        _exit(code)

    # as the ``pixelkm`` command runs: main() with sys.argv, ending through cli._exit_now (no tear-down)
    cli._exit_now = report_then_exit
    sys.argv = ["pixelkm", *argv, *(["--quiet"] if argv[0] == "choose-k" else ["--quiet", "--force"])]
    report_then_exit(cli.main())


def _child_sklearn(src: str, k: int, out: str, report: str) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from sklearn.cluster import KMeans

    from pixelkm.engine.histogram import color_histogram

    t0 = time.perf_counter()
    with Image.open(src) as im:
        px = torch.from_numpy(np.asarray(im.convert("RGB")))
    hist = color_histogram(px.reshape(-1, 3))
    colors = hist.colors.numpy().astype(np.float32)
    t1 = time.perf_counter()
    model = KMeans(k, n_init=1, init="k-means++", tol=1e-4, random_state=0, algorithm="lloyd")
    model.fit(colors, sample_weight=hist.counts.numpy())
    t2 = time.perf_counter()
    labels = torch.from_numpy(model.labels_.astype(np.int64))[hist.inverse]
    pal = np.clip(np.rint(model.cluster_centers_), 0, 255).astype(np.uint8)
    idx = Image.fromarray(labels.to(torch.uint8).reshape(px.shape[:2]).numpy(), "L")
    idx.putpalette(pal.reshape(-1).tolist())
    idx.save(out)
    t3 = time.perf_counter()
    Path(report).write_text(json.dumps({"fit": t2 - t1, "pipeline": t3 - t0, "distinct": len(colors)}))


def _child_imagequant(src: str, k: int, out: str, report: str) -> None:
    import imagequant
    from PIL import Image

    t0 = time.perf_counter()
    with Image.open(src) as im:
        q = imagequant.quantize_pil_image(im.convert("RGBA"), dithering_level=0.0, max_colors=k)
    q.save(out)
    Path(report).write_text(json.dumps({"pipeline": time.perf_counter() - t0}))


def _run(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB and exit status of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace").strip()
    if proc.returncode != 0 and err:
        print(f"  ({' '.join(cmd[:4])} ...: {err.splitlines()[-1]})")
    return wall, usage.ru_maxrss / 1024, proc.returncode


def build_photo(name: str, folder: Path) -> Path:
    from PIL import Image

    path = folder / "photo12mp.png"
    with Image.open(IMAGES / name) as im:
        im.convert("RGB").resize((4000, 3000), Image.LANCZOS).save(path, compress_level=1)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photo", default="kodim05.png")
    p.add_argument("--only", default=None, help="comma-separated rows (default: all): " + ", ".join(COMMANDS))
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        kind, report, *rest = a.child
        if kind == "pixelkm":
            _child_pixelkm(rest, report)
        elif kind == "sklearn":
            _child_sklearn(rest[0], int(rest[1]), rest[2], report)
        else:
            _child_imagequant(rest[0], int(rest[1]), rest[2], report)
        return
    rows = list(COMMANDS) + list(BASELINES)
    if a.only:
        rows = [r.strip() for r in a.only.split(",")]
        unknown = [r for r in rows if r not in COMMANDS and r not in BASELINES]
        if unknown:
            raise SystemExit(f"unknown rows: {unknown}; rows are {list(COMMANDS) + list(BASELINES)}")
    import numpy  # noqa: F401  (the versions below)
    import torch

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}; uptime: {Path('/proc/loadavg').read_text().split()[:3]}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src = build_photo(a.photo, folder)
        print(f"# photo: {a.photo} resized to 4000x3000 (LANCZOS), {src.stat().st_size / 2**20:.1f} MiB PNG")
        print(f"{'row':18s} {'wall s':>7s} {'fit s':>7s} {'rest s':>7s} {'peak MiB':>9s}  notes")
        me = [sys.executable, str(Path(__file__).resolve()), "--child"]
        for row in rows:
            report = str(folder / f"{row}.json")
            notes = ""
            if row in COMMANDS:
                argv = [t.format(src=src, out=folder) for t in COMMANDS[row]]
                wall, peak, code = _run(me + ["pixelkm", report] + argv)
                fit = json.loads(Path(report).read_text())["fit"] if code == 0 else float("nan")
                print(f"{row:18s} {wall:7.2f} {fit:7.2f} {wall - fit:7.2f} {peak:9.0f}  pixelkm {' '.join(argv[:1])}")
                continue
            k = int(row.removeprefix("sklearn").removeprefix("pngquant").removeprefix("imagequant"))
            out = str(folder / f"{row}.png")
            if row.startswith("sklearn"):
                wall, peak, code = _run(me + ["sklearn", report, str(src), str(k), out])
                d = json.loads(Path(report).read_text())
                notes = f"pipeline {d['pipeline']:.2f} s in process; {d['distinct']} distinct colors"
                print(f"{row:18s} {wall:7.2f} {d['fit']:7.2f} {wall - d['fit']:7.2f} {peak:9.0f}  {notes}")
            elif row.startswith("pngquant"):
                exe = shutil.which("pngquant")
                if exe is None:
                    print(f"{row:18s} {'-':>7s}  (pngquant is not installed)")
                    continue
                wall, peak, code = _run([exe, str(k), "--nofs", "--force", "--output", out, str(src)])
                print(f"{row:18s} {wall:7.2f} {'-':>7s} {'-':>7s} {peak:9.0f}  pngquant, exit {code}")
            else:
                try:
                    import imagequant  # noqa: F401
                except ImportError:
                    print(f"{row:18s} {'-':>7s}  (imagequant is not installed)")
                    continue
                wall, peak, code = _run(me + ["imagequant", report, str(src), str(k), out])
                print(f"{row:18s} {wall:7.2f} {'-':>7s} {'-':>7s} {peak:9.0f}  libimagequant (PyPI imagequant)")
    print(f"# uptime after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
