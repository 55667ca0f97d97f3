"""Hardening, files and the command line (issue 16, items 5, 6, 7, 9, 10 and the CLI's unclear errors): outputs
never replace an input or an existing file without force, signals leave no temporary file, sizes are checked
before work, every error is one line naming the problem.

Oracles: the bytes of the user's files before and after, the folder's listing, exit codes and messages.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from PIL import Image

import pixelkm
from pixelkm import cli
from pixelkm.image import load_image, quantize


def run_cli(capsys, *args):
    code = cli.main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *words):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line]
    assert lines and lines[-1].startswith("pixelkm: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[-1], lines[-1]


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    a = np.zeros((40, 60, 3), np.uint8)
    a[:, :30] = [200, 30, 30]
    a[:, 30:] = [20, 40, 220]
    a = np.clip(a.astype(int) + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "in.png"
    Image.fromarray(a).save(path)
    return path


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


# -- item 5: predict_stream ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_predict_stream_never_writes_over_its_input(tmp_path, how):
    X = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    src = tmp_path / "x.npy"
    np.save(src, X)
    before = src.read_bytes()
    out = src
    if how == "symlink":
        out = tmp_path / "link.npy"
        out.symlink_to(src)
    elif how == "hardlink":
        out = tmp_path / "hard.npy"
        os.link(src, out)
    for force in (False, True):
        with pytest.raises(ValueError, match="input file"):
            pixelkm.predict_stream(str(src), X[:3], str(out), force=force)
    assert src.read_bytes() == before


def test_predict_stream_never_overwrites_without_force(tmp_path):
    X = np.random.default_rng(1).normal(size=(300, 2)).astype(np.float32)
    out = tmp_path / "labels.npy"
    out.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError, match="force=True"):
        pixelkm.predict_stream(X, X[:4], out)
    assert out.read_bytes() == b"the user's file"
    _, inertia = pixelkm.predict_stream(X, X[:4], out, force=True)
    np.testing.assert_array_equal(np.load(out), pixelkm.assign_update(X, X[:4]).labels)
    assert listing(tmp_path) == ["labels.npy"]


def test_predict_stream_failure_leaves_nothing(tmp_path):
    X = np.random.default_rng(1).normal(size=(300, 2)).astype(np.float32)
    X[250] = np.nan  # found after the first chunk was written
    with pytest.raises(ValueError, match="NaN"):
        pixelkm.predict_stream(X, X[:4], tmp_path / "labels.npy", chunk_rows=100)
    assert listing(tmp_path) == []


# -- item 6: never over an input, --force or not -------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("how", ["same", "symlink"])
def test_quantize_and_segment_refuse_to_write_over_the_input(capsys, photo, tmp_path, how, force):
    before = photo.read_bytes()
    target = photo
    if how == "symlink":
        target = tmp_path / "link.png"
        target.symlink_to(photo)
    extra = ["--force"] if force else []
    code, _, err = run_cli(capsys, "quantize", photo, "-o", target, "-k", "2", *extra)
    one_line_error(code, err, "input")
    seg = tmp_path / "seg.png"
    code, _, err = run_cli(capsys, "segment", photo, "-o", seg, "--mean-image", target, "-k", "2", *extra)
    one_line_error(code, err, "input")
    assert photo.read_bytes() == before
    assert not (tmp_path / "seg.png").exists()


def test_result_save_refuses_its_own_input(photo):
    before = photo.read_bytes()
    r = quantize(str(photo), 2)
    with pytest.raises(ValueError, match="input file"):
        r.save(photo, force=True)
    assert photo.read_bytes() == before
    out = photo.parent / "q.png"  # an output, even loaded again, is the user's to replace with force
    r.save(out)
    back = load_image(out)
    assert r.save(out, force=True).path == out and back.path == out


# -- item 7: signals -----------------------------------------------------------------------------------------------

_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from pixelkm.image._io import atomic_write
    from pixelkm.io.strips import NpyWriter
    which, target = sys.argv[1], sys.argv[2]
    if which == "atomic":
        def write(f):
            f.write(b"partial")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        atomic_write(target, write)
    else:
        w = NpyWriter(target, (1000,), np.uint8)
        w.write(np.zeros(10, np.uint8))
        print("writing", flush=True)
        time.sleep(60)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("which", ["atomic", "npy"])
def test_signal_during_a_write_leaves_no_temporary_file(tmp_path, sig, which):
    target = tmp_path / ("out.png" if which == "atomic" else "out.npy")
    p = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, which, str(target)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert p.stdout.readline().strip() == "writing"
    assert len(listing(tmp_path)) == 1  # the temporary file
    p.send_signal(getattr(signal, sig))
    p.wait(30)
    assert p.returncode == -getattr(signal, sig)  # ended as the signal ends a process
    assert listing(tmp_path) == []


def test_demo_failing_half_way_says_what_it_wrote(capsys, photo, tmp_path, monkeypatch):
    import pixelkm.image as pim

    def broken(*args, **kwargs):
        raise RuntimeError("segmentation broke")

    # a step that fails computing: every result comes before the first file, so nothing is written
    monkeypatch.setattr(pim, "segment", broken)
    code, _, err = run_cli(capsys, "demo", "--image", photo, "--out", tmp_path / "demo", "-k", "2")
    assert code == 1 and "segmentation broke" in err and "stopped half-way" not in err
    assert not (tmp_path / "demo").exists()
    monkeypatch.undo()

    # a write that fails half-way: the demo says what it had written
    def broken_write(*args, **kwargs):
        raise OSError("the disk broke")

    monkeypatch.setattr(pim, "save_image", broken_write)
    code, _, err = run_cli(capsys, "demo", "--image", photo, "--out", tmp_path / "demo", "-k", "2")
    assert code == 1 and "the disk broke" in err
    assert "stopped half-way" in err and "quantized-2colors.png" in err and "segments.png" in err


# -- item 9: decoded size against free memory ----------------------------------------------------------------------


def _png_header_only(path, width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_huge_header_refused_before_decoding_whatever_max_pixels(tmp_path, capsys, monkeypatch):
    from pixelkm import _sysinfo

    monkeypatch.setattr(_sysinfo, "available_memory", lambda: 8 << 30)
    path = tmp_path / "bomb.png"
    _png_header_only(path, 100_000, 100_000)
    with pytest.raises(pixelkm.image.ImageTooLargeError, match="memory available"):
        load_image(path, max_pixels=20_000_000_000)
    code, _, err = run_cli(capsys, "quantize", path, "-o", tmp_path / "q.png", "--max-pixels", "20000000000")
    one_line_error(code, err, "bomb.png", "memory")


def test_memory_error_is_a_message(capsys, monkeypatch, photo, tmp_path):
    def oom(a):
        raise MemoryError()

    monkeypatch.setattr(cli, "cmd_quantize", oom)
    parser = cli.build_parser  # the parser binds the function at build time: patch the default
    monkeypatch.setattr(
        cli,
        "build_parser",
        lambda: _with_func(parser(), "quantize", oom),
    )
    code, _, err = run_cli(capsys, "quantize", photo, "-o", tmp_path / "q.png")
    one_line_error(code, err, "out of memory")
    assert "MemoryError: MemoryError" not in err


def _with_func(parser, name, func):
    sub = next(a for a in parser._actions if getattr(a, "choices", None) and name in a.choices)
    sub.choices[name].set_defaults(func=func)
    return parser


# -- item 10: choose-k ---------------------------------------------------------------------------------------------


def test_choose_k_range_validated_before_work(capsys, photo, tmp_path):
    import time

    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        cli.main(["choose-k", str(photo), "--ks", "2-100000000"])
    assert e.value.code == 2 and "at most 1000" in capsys.readouterr().err
    code, _, err = run_cli(capsys, "choose-k", photo, "--ks", "2,5,3000")
    one_line_error(code, err, "3000", "2400 pixels")
    assert time.perf_counter() - t0 < 10


# -- the command line's unclear errors -----------------------------------------------------------------------------


def test_no_arguments_lists_the_commands(capsys):
    code = cli.main([])
    _, err = capsys.readouterr()
    assert code == 2
    for name in ("quantize", "segment", "palette", "remove-bg", "choose-k", "demo"):
        assert name in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_dev_full_says_it_is_not_a_file(capsys, photo):
    code, _, err = run_cli(capsys, "quantize", photo, "-o", "/dev/full", "-k", "2")
    one_line_error(code, err, "/dev/full", "not a regular file")
    assert "pass --force" not in err


def test_spatial_weight_must_be_finite(capsys, photo, tmp_path):
    with pytest.raises(SystemExit) as e:
        cli.main(["segment", str(photo), "-o", str(tmp_path / "s.png"), "--spatial-weight", "inf"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "finite" in err and "Input X" not in err


def test_remove_bg_refuses_a_format_without_alpha(capsys, photo, tmp_path):
    code, _, err = run_cli(capsys, "remove-bg", photo, "-o", tmp_path / "out.jpg")
    one_line_error(code, err, "out.jpg", "transparency")
    assert listing(tmp_path) == ["in.png"]


def test_corrupt_npy_and_truncated_png_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="bad.npy"):
        pixelkm.fit_stream(str(bad), 2)
    png = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(png)
    png.write_bytes(png.read_bytes()[:3000])
    with pytest.raises(ValueError, match="cut.png"):
        pixelkm.fit_stream(str(png), 2)
    code, _, err = run_cli(capsys, "quantize", png, "-o", tmp_path / "q.png", "-k", "2")
    one_line_error(code, err, "cut.png")
