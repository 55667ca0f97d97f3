"""Palette PNG writes: seconds and bytes of zlib level 4, Pillow's default (6) and the run-length strategy.

    flock /tmp/pixelkm-bench.lock python benchmarks/png_write.py [--ks 2,4,8,16,32,256] [--repeats 3]

For each bundled photo (../shared/images) and the 12 MP one (kodim05 resized to 4000x3000, as photo_commands.py
makes it), quantized to each k with and without dithering, the palette image is encoded in memory with each
setting, round-robin (``common.interleaved_times``), minimum of the repeats. The last column is what
``pixelkm.image._common.png_options`` picks for it (``runs`` off for dithered results, as ``QuantizeResult.save``
passes it); totals per (dithered, colors <= 16 or more) group close the table.
"""

from __future__ import annotations

import argparse
import io
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photo_commands import IMAGES  # noqa: E402

from benchmarks import common  # noqa: E402

SETTINGS = {"level4": {"compress_level": 4}, "level6": {}, "rle": {"compress_type": zlib.Z_RLE}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", default="2,4,8,16,32,256")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    from PIL import Image

    import pixelkm.image as pim
    from pixelkm.image._common import RLE_PNG_COLORS, png_options

    photos = {q.name: np.asarray(Image.open(q).convert("RGB")) for q in sorted(IMAGES.glob("kodim*.png"))}
    with Image.open(IMAGES / "kodim05.png") as im:
        photos["12mp"] = np.asarray(im.convert("RGB").resize((4000, 3000), Image.LANCZOS))
    totals: dict = {}
    print(f"{'photo':12s} {'k':>4s} dither " + " ".join(f"{s:>17s}" for s in SETTINGS) + "  picked")
    for name, px in photos.items():
        for k in (int(v) for v in a.ks.split(",")):
            base = pim.quantize(px, k)
            for dither in (False, True):
                im = (base.dither() if dither else base).to_pil()

                def encode(kw, im=im):
                    buf = io.BytesIO()
                    im.save(buf, "PNG", **kw)
                    return buf.tell()

                runs = {s: (lambda kw=kw: encode(kw)) for s, kw in SETTINGS.items()}
                timed = common.interleaved_times(runs, a.repeats, float("inf"))
                picked = "rle" if png_options(im, "x.png", runs=not dither).get("compress_type") == zlib.Z_RLE else ""
                group = (dither, "<=" if k <= RLE_PNG_COLORS else ">")
                cells = []
                for s, (times, size) in timed.items():
                    cells.append(f"{min(times):7.3f} s {size / 1024:6.0f} K")
                    t = totals.setdefault(group, {}).setdefault(s, [0.0, 0])
                    t[0] += min(times)
                    t[1] += size
                print(f"{name:12s} {k:4d} {'yes' if dither else 'no':6s} " + " ".join(cells) + f"  {picked}")
    for (dither, le), row in sorted(totals.items()):
        label = f"dither={'yes' if dither else 'no'} k {le} {RLE_PNG_COLORS}"
        print(f"total {label:22s} " + " ".join(f"{s} {t:.2f} s {b / 1024:.0f} KiB" for s, (t, b) in row.items()))


if __name__ == "__main__":
    main()
