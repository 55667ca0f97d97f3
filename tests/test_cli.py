"""The ``pixelkm`` command end to end in temporary folders: outputs, refusals, bad input, the demo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import photo_path
from PIL import Image

from pixelkm import cli
from pixelkm.image import load_image


@pytest.fixture(scope="module")
def small_photo(tmp_path_factory):
    """kodim23 at a quarter of its size, as a PNG file."""
    path = tmp_path_factory.mktemp("img") / "photo.png"
    with Image.open(photo_path("kodim23.png")) as im:
        Image.fromarray(np.asarray(im.convert("RGB"))[::4, ::4]).save(path)
    return path


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, pattern):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pixelkm: error: "), err
    assert pattern in lines[0], lines[0]


def test_quantize_writes_and_refuses_to_overwrite(capsys, small_photo, tmp_path):
    out = tmp_path / "q.png"
    code, text, _ = run(capsys, "quantize", small_photo, "-o", out, "-k", "8", "--seed", "3")
    assert code == 0 and out.exists()
    assert "8 colors" in text and "palette PNG" in text and "x the original" in text and "PSNR" in text
    with Image.open(out) as im:
        assert im.mode == "P" and len(im.getcolors()) == 8
    before = out.read_bytes()
    code, _, err = run(capsys, "quantize", small_photo, "-o", out, "-k", "4")
    one_line_error(code, err, "exists; pass --force")
    assert out.read_bytes() == before
    code, _, _ = run(capsys, "quantize", small_photo, "-o", out, "-k", "4", "--force", "--dither")
    assert code == 0
    with Image.open(out) as im:
        assert len(im.getcolors()) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.png"]  # no temporary files left


def test_quantize_plot_and_clean(capsys, small_photo, tmp_path):
    pytest.importorskip("matplotlib")
    code, text, _ = run(
        capsys,
        "quantize",
        small_photo,
        "-o",
        tmp_path / "q.png",
        "--plot",
        tmp_path / "plot.png",
        "--clean",
        "remove",
        "--features",
        "oklab",
        "-k",
        "6",
    )
    assert code == 0 and (tmp_path / "plot.png").exists() and "outlier pixels removed" in text


def test_bad_inputs(capsys, small_photo, tmp_path):
    code, _, err = run(capsys, "quantize", tmp_path / "missing.png", "-o", tmp_path / "o.png")
    one_line_error(code, err, "no such file")
    (tmp_path / "text.png").write_text("hello")
    code, _, err = run(capsys, "palette", tmp_path / "text.png")
    one_line_error(code, err, "not an image")
    data = small_photo.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "segment", tmp_path / "cut.png", "-o", tmp_path / "s.png")
    one_line_error(code, err, "truncated")
    code, _, err = run(capsys, "quantize", small_photo, "-o", tmp_path / "nofolder" / "o.png")
    one_line_error(code, err, "does not exist")
    code, _, err = run(capsys, "quantize", small_photo, "-o", tmp_path / "o.xyz")
    one_line_error(code, err, "suffix")
    code, _, err = run(capsys, "quantize", small_photo, "-o", tmp_path / "o.png", "--max-pixels", "100")
    one_line_error(code, err, "--max-pixels")
    code, _, err = run(capsys, "quantize", small_photo, "-o", tmp_path / "o.png", "--palette", tmp_path / "none.json")
    one_line_error(code, err, "no such palette file")
    (tmp_path / "bad.json").write_text('["#12345g"]')
    code, _, err = run(capsys, "quantize", small_photo, "-o", tmp_path / "o.png", "--palette", tmp_path / "bad.json")
    one_line_error(code, err, "is not a color")
    code, _, err = run(capsys, "quantize", small_photo, small_photo.parent / "*.nothing", "--out-dir", tmp_path)
    one_line_error(code, err, "no file matches")
    code, _, err = run(capsys, "quantize", small_photo, small_photo, "-o", tmp_path / "o.png")
    assert code == 0  # the same file twice is one input
    (tmp_path / "o.png").unlink()
    code, _, err = run(capsys, "quantize", small_photo, "-o", small_photo, "--force")
    one_line_error(code, err, "is the input file")
    code, _, err = run(capsys, "quantize", small_photo)
    one_line_error(code, err, "--out-dir")
    code, _, err = run(capsys, "quantize", small_photo, "-o", tmp_path / "o.png", "--device", "cuda:7")
    one_line_error(code, err, "not available")
    if os.geteuid() != 0:  # root reads everything
        locked = tmp_path / "locked.png"
        shutil.copy(small_photo, locked)
        locked.chmod(0)
        code, _, err = run(capsys, "palette", locked)
        one_line_error(code, err, "permission denied")
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "s.png").exists()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["quantize"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["choose-k", "x.png", "--ks", "a-b"])
    assert e.value.code == 2
    assert "--ks takes" in capsys.readouterr().err


@pytest.mark.parametrize("command", [None, "quantize", "segment", "palette", "remove-bg", "choose-k", "demo"])
def test_help(capsys, command):
    with pytest.raises(SystemExit) as e:
        cli.main(([command] if command else []) + ["--help"])
    assert e.value.code == 0
    assert "usage: pixelkm" in capsys.readouterr().out


def test_palette_json(capsys, small_photo, tmp_path):
    code, out, _ = run(capsys, "palette", small_photo, "-k", "5", "--json", "-o", tmp_path / "sw.png")
    assert code == 0
    data = json.loads(out)
    assert len(data["colors"]) == 5
    assert sum(c["proportion"] for c in data["colors"]) == pytest.approx(1, abs=1e-5)
    assert all(c["hex"] == "#" + "".join(f"{v:02x}" for v in c["rgb"]) for c in data["colors"])
    assert (tmp_path / "sw.png").exists()
    code, out, _ = run(capsys, "palette", small_photo, "-k", "3")
    assert code == 0 and len(out.strip().splitlines()) == 3 and out.startswith("#")


def test_segment_remove_bg_choose_k(capsys, small_photo, tmp_path):
    code, out, _ = run(
        capsys,
        "segment",
        small_photo,
        "-o",
        tmp_path / "s.png",
        "-k",
        "4",
        "--mean-image",
        tmp_path / "m.png",
    )
    assert code == 0 and out.count("segment ") == 4
    assert load_image(tmp_path / "m.png").pixels.shape == (128, 192, 3)
    code, out, _ = run(capsys, "remove-bg", small_photo, "-o", tmp_path / "bg.png", "--mask", tmp_path / "mask.png")
    assert code == 0
    bg, mask = load_image(tmp_path / "bg.png"), load_image(tmp_path / "mask.png")
    np.testing.assert_array_equal(bg.alpha.numpy() > 0, mask.pixels[:, :, 0].numpy() > 0)
    code, out, _ = run(capsys, "choose-k", small_photo, "--ks", "2-4", "--json", "--sample-size", "300")
    assert code == 0
    data = json.loads(out)
    assert data["ks"] == [2, 3, 4] and data["suggested_k"] in (2, 3, 4)


def test_demo(capsys, tmp_path):
    out = tmp_path / "demo"
    code, text, _ = run(capsys, "demo", "--out", out)
    assert code == 0, text
    names = sorted(p.name for p in out.iterdir())
    expected = [
        "background-removed.png",
        "product.png",
        "choose-k.json",
        "palette.json",
        "palette.png",
        "quantized-16colors-dithered.png",
        "quantized-16colors.png",
        "segments-mean.png",
        "segments.png",
    ]
    try:
        import matplotlib  # noqa: F401

        expected += ["plot-choose-k.png", "plot-palette.png", "plot-quantize.png", "plot-segments.png"]
    except ImportError:
        assert "plots skipped" in text
    assert names == sorted(expected)
    for name in expected:
        assert f"wrote {out / name}" in text
    q = load_image(out / "quantized-16colors.png")
    assert q.pixels.shape == (512, 768, 3) and len(np.unique(q.pixels.reshape(-1, 3), axis=0)) == 16
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, err = run(capsys, "demo", "--out", out)
    one_line_error(code, err, "exists; pass --force")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_console_script(small_photo, tmp_path):
    """The installed entry point: exit codes and one-line errors from a real process."""
    exe = shutil.which("pixelkm")
    cmd = [exe] if exe else [sys.executable, "-m", "pixelkm.cli"]
    # the two processes run side by side (each is mostly its start-up: two cores, half the wall time)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    ok = subprocess.Popen(cmd + ["palette", str(small_photo), "-k", "2", "--json"], **pipes)
    bad = subprocess.Popen(cmd + ["palette", str(tmp_path / "nope.png")], **pipes)
    ok_out, _ = ok.communicate()
    _, bad_err = bad.communicate()
    assert ok.returncode == 0 and len(json.loads(ok_out)["colors"]) == 2
    assert bad.returncode == 1 and bad_err.strip() == f"pixelkm: error: no such file: {tmp_path / 'nope.png'}"
    assert "Traceback" not in bad_err


def test_errors_come_before_the_heavy_imports(small_photo, tmp_path):
    """A command whose input, output or palette is wrong says so before it imports torch, numba or the toolkit
    (1.5-2 s of a 2-core machine's start-up): every check of names and headers runs first."""
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "taken.png").write_bytes(b"mine")
    t, src = tmp_path, str(small_photo)
    cases = [
        (["quantize", str(t / "nope.png"), "-o", str(t / "o.png")], "no such file"),
        (["quantize", src, "-o", str(t / "taken.png")], "exists; pass --force"),
        (["quantize", str(t / "text.png"), "-o", str(t / "o.png")], "not an image file"),
        (["quantize", src, "-o", str(t / "o.xyz")], "suffix"),
        (["quantize", src, "-o", str(t / "o.png"), "--max-pixels", "100"], "--max-pixels"),
        (["quantize", src, "-o", str(t / "o.png"), "--palette", str(t / "none.json")], "no such palette file"),
        (["segment", str(t), "-o", str(t / "s.png")], "is a folder"),
        (["segment", src, "-o", str(t / "s.png"), "--mean-image", str(t / "m.xyz")], "suffix"),
        (["palette", str(t / "nope.png")], "no such file"),
        (["remove-bg", src, "-o", str(t / "b.png"), "--mask", str(t / "taken.png")], "exists; pass --force"),
        (["remove-bg", str(t / "text.png"), "-o", str(t / "b.png")], "not an image file"),
        (["choose-k", str(t / "nope.png")], "no such file"),
    ]
    script = (
        "import json, sys\nfrom pixelkm.cli import main\nout = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    out.append(main(argv))\n"
        "heavy = sorted(m for m in ('torch', 'numba', 'pixelkm.image', 'pixelkm.engine') if m in sys.modules)\n"
        "print(json.dumps([out, heavy]))\n"
    )
    argvs = [argv for argv, _ in cases]
    res = subprocess.run([sys.executable, "-c", script, json.dumps(argvs)], capture_output=True, text=True)
    codes, heavy = json.loads(res.stdout)
    lines = res.stderr.strip().splitlines()
    assert codes == [1] * len(cases) and heavy == [], (codes, heavy, res.stderr)
    assert len(lines) == len(cases), res.stderr
    for line, (argv, pattern) in zip(lines, cases):
        assert line.startswith("pixelkm: error: ") and pattern in line, (argv, line)
    assert (t / "taken.png").read_bytes() == b"mine" and not (t / "o.png").exists()


def test_demo_checks_first_and_writes_nothing_when_a_step_fails(capsys, tmp_path):
    # each of these stopped half-way with files written (or an empty folder): now refused before any output
    few = tmp_path / "two-colors.png"
    Image.fromarray(np.repeat(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8), 40, axis=0).repeat(30, 1)).save(few)
    for args, pattern in (
        (["-k", "300"], "at most 256 colors"),
        (["--device", "bogus"], "bogus"),
    ):
        out = tmp_path / f"d{len(args[1])}"
        code, _, err = run(capsys, "demo", "--out", out, *args)
        one_line_error(code, err, pattern)
        assert not out.exists()
    one = tmp_path / "one-color.png"
    Image.fromarray(np.full((20, 20, 3), 7, np.uint8)).save(one)
    code, _, err = run(capsys, "demo", "--out", tmp_path / "d1", "--image", one)
    one_line_error(code, err, "1 distinct")
    assert not (tmp_path / "d1").exists()
    # an image of fewer than 10 colors: choose-k runs up to its colors, every file is written
    monkey_out = tmp_path / "few"
    code, text, _ = run(capsys, "demo", "--out", monkey_out, "--image", few, "-k", "4")
    assert code == 0, text
    assert "inertia and silhouette for k = 2..2" in text
    assert json.loads((monkey_out / "choose-k.json").read_text())["ks"] == [2]


def test_demo_without_matplotlib_or_tqdm(capsys, small_photo, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    out = tmp_path / "d"
    code, text, _ = run(capsys, "demo", "--out", out, "--image", small_photo, "-k", "8")
    assert code == 0 and "plots skipped: matplotlib is not installed" in text
    names = sorted(p.name for p in out.iterdir())
    assert "quantized-8colors.png" in names and not any(n.startswith("plot-") for n in names)


def test_quantize_many_inputs_out_dir_and_summary(capsys, small_photo, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(small_photo, src / name)
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    out.mkdir()
    code, text, _ = run(capsys, "quantize", src, "--out-dir", out, "-k", "4")
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a-quant.png", "b-quant.png"]
    lines = text.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"wrote {out / 'a-quant.png'}") and "4 colors" in lines[0]
    assert lines[-1] == "2 of 2 written, 0 skipped, 0 failed"
    code, text, _ = run(capsys, "quantize", str(src / "*.png"), "--out-dir", out, "--suffix=-g", "-k", "4")
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["a-g.png", "a-quant.png", "b-g.png", "b-quant.png"]
    # one bad input among good ones: the others are written, the exit code says it failed
    (src / "c.png").write_text("broken")
    code, text, err = run(capsys, "quantize", src, "--out-dir", out, "--suffix=-h", "-k", "4")
    assert code == 1 and "c.png" in err and "not an image" in err
    assert "2 of 3 written, 0 skipped, 1 failed" in text
    code, _, err = run(capsys, "quantize", src / "a.png", src / "b.png", "-o", out / "x.png")
    one_line_error(code, err, "use --out-dir")


def test_quantize_size_guards(capsys, small_photo, tmp_path):
    out = tmp_path / "q.png"
    code, text, err = run(capsys, "quantize", small_photo, "-o", out, "--max-size", "100")
    assert code == 98 and not out.exists() and "skipped" in text and "--max-size" in text
    code, text, _ = run(capsys, "quantize", small_photo, "-o", out, "--max-size", "10M", "--skip-if-larger")
    assert code == 0 and out.exists()  # 16 colors: smaller than the original
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.jpg", quality=5)  # a tiny JPEG: its PNG is larger
    code, text, _ = run(capsys, "quantize", tmp_path / "noise.jpg", "-o", tmp_path / "n.png", "--skip-if-larger")
    assert code == 98 and not (tmp_path / "n.png").exists() and "larger than the original" in text
    with pytest.raises(SystemExit):
        cli.main(["quantize", str(small_photo), "-o", str(out), "--max-size", "lots"])
    assert "expected a size" in capsys.readouterr().err


def test_quantize_more_than_256_colors_is_truecolor(capsys, small_photo, tmp_path):
    out = tmp_path / "q.png"
    src = tmp_path / "small.png"
    Image.fromarray(np.asarray(Image.open(small_photo))[::2, ::2].copy()).save(src)
    code, text, _ = run(capsys, "quantize", src, "-o", out, "-k", "300", "--max-iter", "5")
    assert code == 0 and "truecolor: more than 256 colors" in text
    with Image.open(out) as im:
        assert im.mode == "RGB" and 256 < len(im.getcolors(1 << 16)) <= 300


def test_quantize_onto_a_given_palette(capsys, small_photo, tmp_path):
    pal = tmp_path / "pal.json"
    pal.write_text(json.dumps(["#000000", "#ffffff", [200, 30, 40]]))
    out = tmp_path / "q.png"
    code, text, _ = run(capsys, "quantize", small_photo, "-o", out, "--palette", pal)
    assert code == 0
    used = {tuple(c) for _, c in Image.open(out).convert("RGB").getcolors()}
    assert used <= {(0, 0, 0), (255, 255, 255), (200, 30, 40)}
    # a swatch image works too, and so does `pixelkm palette --json` output
    code, js, _ = run(capsys, "palette", small_photo, "-k", "4", "--json")
    (tmp_path / "p.json").write_text(js)
    code, _, _ = run(capsys, "quantize", small_photo, "-o", tmp_path / "q2.png", "--palette", tmp_path / "p.json")
    assert code == 0
    want = {tuple(c["rgb"]) for c in json.loads(js)["colors"]}
    assert {tuple(c) for _, c in Image.open(tmp_path / "q2.png").convert("RGB").getcolors()} <= want


def test_progress_only_on_a_terminal_and_never_with_quiet_or_json(capsys, small_photo, tmp_path, monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    code, _, err = run(capsys, "quantize", small_photo, "-o", tmp_path / "a.png", "-k", "4")
    assert code == 0 and "quantize" in err  # the bar (tqdm on stderr)
    code, out, err = run(capsys, "quantize", small_photo, "-o", tmp_path / "b.png", "-k", "4", "--quiet")
    assert code == 0 and out == "" and err == ""
    code, out, err = run(capsys, "choose-k", small_photo, "--ks", "2-3", "--json", "--sample-size", "100")
    assert code == 0 and err == "" and json.loads(out)["ks"] == [2, 3]
    code, out, err = run(capsys, "palette", small_photo, "-k", "3", "--json")
    assert code == 0 and err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    code, _, err = run(capsys, "segment", small_photo, "-o", tmp_path / "s.png", "-k", "3")
    assert code == 0 and err == ""


def test_remove_bg_options(capsys, tmp_path):
    from pixelkm.image import product_scene

    img, truth = product_scene("plain", "ball", size=(120, 160))
    Image.fromarray(img).save(tmp_path / "p.png")
    code, text, _ = run(capsys, "remove-bg", tmp_path / "p.png", "-o", tmp_path / "o.png", "--feather", "2")
    assert code == 0 and "made transparent" in text
    alpha = load_image(tmp_path / "o.png").alpha.numpy()
    assert ((alpha > 0) & (alpha < 255)).any()  # a soft edge
    iou = ((alpha >= 128) & truth).sum() / ((alpha >= 128) | truth).sum()
    assert iou > 0.95
    with pytest.raises(SystemExit):
        cli.main(["remove-bg", str(tmp_path / "p.png"), "-o", str(tmp_path / "x.png"), "--feather", "-1"])


def test_command_sets_a_passive_openmp_wait_policy_unless_given():
    """The command's own process asks OpenMP for passive waiting before torch loads; a policy in the environment,
    or a process where torch is already imported (``main([...])`` from Python), is left alone."""
    code = (
        "import os, sys\n"
        "if sys.argv[1] == 'torch': import torch\n"
        "from pixelkm import cli\n"
        "cli._passive_openmp()\n"
        "print(os.environ.get('OMP_WAIT_POLICY'))\n"
    )

    def run(first, env_policy=None):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if env_policy is not None:
            env["OMP_WAIT_POLICY"] = env_policy
        out = subprocess.run([sys.executable, "-c", code, first], env=env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    assert run("-") == "passive"
    assert run("-", "active") == "active"
    assert run("torch") == "None"
