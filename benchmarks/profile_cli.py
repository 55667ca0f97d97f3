"""Where a ``pixelkm`` command's time goes: cProfile over the command's ``main()`` in a fresh process.

    python benchmarks/profile_cli.py [--photo kodim05.png] [--top 30] quantize {src} -o {out}/q.png -k 16

``{src}`` is the 12 MP photo (``--photo`` resized to 4000 x 3000 with LANCZOS, as photo_commands.py builds
it) and ``{out}`` a temporary folder (one for each run). The command runs once as it is (so that numba's and
Triton's on-disk caches are warm, as for a user's second call), then once more in a child process under cProfile,
which prints the wall time and the functions with the most cumulative and the most own time (the main thread
only: the command's decode thread is not in it). On CUDA, the time the host waits for the GPU shows up in the
call that synchronizes (``.item()``, ``.cpu()``, ``.tolist()``).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_commands import build_photo  # noqa: E402  (the same 12 MP photo)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photo", default="kodim05.png")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("argv", nargs=argparse.REMAINDER)
    a = p.parse_args()
    if a.child:
        from pixelkm.cli import main as cli_main

        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        try:
            cli_main(a.argv)
        except SystemExit:
            pass
        prof.disable()
        print(f"wall in process: {time.perf_counter() - t0:.2f} s: pixelkm {' '.join(a.argv)}")
        stats = pstats.Stats(prof).strip_dirs()
        stats.sort_stats("cumulative").print_stats(a.top)
        stats.sort_stats("tottime").print_stats(a.top)
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = build_photo(a.photo, Path(tmp))
        first, second = Path(tmp, "first"), Path(tmp, "second")
        first.mkdir()
        second.mkdir()
        argv = [t.format(src=src, out=first) for t in a.argv]
        me = [sys.executable, str(Path(__file__).resolve())]
        t0 = time.perf_counter()
        run = "import sys; from pixelkm.cli import main; sys.exit(main(sys.argv[1:]))"
        subprocess.run([sys.executable, "-c", run, *argv], check=True, stdout=subprocess.DEVNULL)
        print(f"first run (caches warmed): {time.perf_counter() - t0:.2f} s wall")
        t0 = time.perf_counter()
        argv = [t.format(src=src, out=second) for t in a.argv]
        subprocess.run([*me, "--top", str(a.top), "--child", *argv], check=True)
        print(f"profiled run: {time.perf_counter() - t0:.2f} s wall")


if __name__ == "__main__":
    main()
