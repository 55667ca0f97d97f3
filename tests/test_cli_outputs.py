"""The command line's outputs and refusals: inputs never overwritten, formats that would lose what the image holds
refused before anything is written, clear one-line errors, quiet ends on a closed pipe."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from test_cli import one_line_error, run

from pixelkm import cli


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 64x48 image of many colors, as a PNG file."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([x * 4, y * 5, (x + y) * 2 + 20], -1) + rng.normal(0, 10, (48, 64, 3))
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
    return path


def test_palette_file_is_an_input_even_with_force(capsys, photo, tmp_path):
    pal = tmp_path / "pal.png"
    Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]], [[255, 0, 0], [0, 0, 255]]], np.uint8)).save(pal)
    before = pal.read_bytes()
    code, _, err = run(capsys, "quantize", photo, "--palette", pal, "-o", pal, "--force")
    one_line_error(code, err, "it is the input file")
    assert pal.read_bytes() == before


def test_quantize_to_tif_keeps_alpha_and_refuses_jpg_bmp(capsys, photo, tmp_path):
    with Image.open(photo) as im:
        rgba = np.dstack([np.asarray(im), np.where(np.arange(64) < 32, 255, 0).astype(np.uint8)[None].repeat(48, 0)])
    src = tmp_path / "half.png"
    Image.fromarray(rgba, "RGBA").save(src)
    code, _, _ = run(capsys, "quantize", src, "-o", tmp_path / "q.tif", "-k", "8")
    assert code == 0
    with Image.open(tmp_path / "q.tif") as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGBA"))[..., 3], rgba[..., 3])
    for suffix, fmt in ((".jpg", "JPEG"), (".bmp", "BMP")):
        code, _, err = run(capsys, "quantize", src, "-o", tmp_path / f"q{suffix}", "-k", "8")
        one_line_error(code, err, f"the {fmt} format has no transparency")
        assert not (tmp_path / f"q{suffix}").exists()


def test_gif_more_than_256_colors_is_refused(capsys, photo, tmp_path):
    code, _, err = run(capsys, "quantize", photo, "-k", "300", "-o", tmp_path / "q.gif")
    one_line_error(code, err, "a GIF holds at most 256 colors")
    assert list(tmp_path.iterdir()) == []


def test_webp_output_has_the_colors_reported(capsys, photo, tmp_path):
    code, text, _ = run(capsys, "quantize", photo, "-k", "8", "-o", tmp_path / "q.webp")
    assert code == 0 and "8 colors" in text
    with Image.open(tmp_path / "q.webp") as im:
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) == 8


def test_remove_bg_feathered_gif_is_refused_before_any_work(capsys, photo, tmp_path):
    code, _, err = run(capsys, "remove-bg", photo, "-o", tmp_path / "x.gif", "--feather", "3")
    one_line_error(code, err, "the GIF format has only fully transparent or opaque pixels")
    code, _, err = run(capsys, "remove-bg", photo, "-o", tmp_path / "x.jpg")
    one_line_error(code, err, "the JPEG format has no transparency")
    assert list(tmp_path.iterdir()) == []


def test_remove_bg_summary_counts_the_pixels(capsys, photo, tmp_path):
    code, text, _ = run(capsys, "remove-bg", photo, "-o", tmp_path / "x.png")
    assert code == 0
    assert f"of {48 * 64} pixels made transparent" in text and "built-in" not in text


@pytest.mark.parametrize("size", ["inf", "1e400K", "nan"])
def test_max_size_must_be_finite(capsys, photo, tmp_path, size):
    with pytest.raises(SystemExit) as e:
        cli.main(["quantize", str(photo), "-o", str(tmp_path / "q.png"), "--max-size", size])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --max-size: expected a finite size" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["quantize", "segment", "palette"])
def test_a_bad_plot_suffix_is_refused_before_any_output(capsys, photo, tmp_path, command):
    out = tmp_path / "out.png"
    code, _, err = run(capsys, command, photo, "-o", out, "--plot", tmp_path / "p.plot", "-k", "2")
    one_line_error(code, err, "cannot tell which figure format to write")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["P", "LA", "CMYK", "I;16"])
def test_choose_k_takes_every_mode(capsys, photo, tmp_path, mode):
    with Image.open(photo) as im:
        if mode == "I;16":
            im = Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)
            assert im.mode == "I;16"
        else:
            im = im.convert(mode)
        path = tmp_path / ("in.tif" if mode == "CMYK" else "in.png")
        im.save(path)
    code, out, err = run(capsys, "choose-k", path, "--ks", "2-3", "-q")
    assert code == 0, err
    assert "suggested k" in out


def test_an_output_name_as_long_as_the_file_system_allows(capsys, photo, tmp_path):
    out = tmp_path / ("a" * 246 + ".png")
    code, _, err = run(capsys, "quantize", photo, "-o", out, "-k", "4")
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_a_closed_stdout_ends_quietly(photo):
    """``pixelkm ... --json | head -c 10``: the reader leaves, the command stops without an error message."""
    exe = shutil.which("pixelkm")
    cmd = [exe] if exe else [sys.executable, "-m", "pixelkm.cli"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # every print writes: the closed pipe is met while printing
    p = subprocess.Popen(
        cmd + ["palette", str(photo), "-k", "2", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == 141 and err == ""


def test_segment_refuses_a_mean_image_format_without_alpha_before_writing_the_overlay(capsys, tmp_path):
    # the overlay (.png) was written, then the mean image (.jpg) refused: now both are checked before the fit
    rgba = np.zeros((24, 32, 4), np.uint8)
    rgba[..., 0] = np.arange(32, dtype=np.uint8) * 8
    rgba[..., 3] = 255
    rgba[:, :8, 3] = 0
    src = tmp_path / "in.png"
    Image.fromarray(rgba, "RGBA").save(src)
    out, mean = tmp_path / "seg.png", tmp_path / "mean.jpg"
    code, _, err = run(capsys, "segment", src, "-o", out, "--mean-image", mean, "-k", "2")
    assert code == 1 and "JPEG" in err and "transparen" in err
    assert not out.exists() and not mean.exists()
