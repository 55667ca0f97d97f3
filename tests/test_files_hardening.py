"""Files tried on purpose: full disk, devices, folders, zero-byte and tiny images, wrong extensions."""

from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest
from conftest import photo_path
from PIL import Image

from pixelkm import cli
from pixelkm.image import load_image, quantize
from pixelkm.image._io import atomic_write


def run_cli(capsys, *args):
    code = cli.main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *words):
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("pixelkm: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_dev_full_is_never_replaced(capsys):
    before = os.stat("/dev/full")
    code, _, err = run_cli(capsys, "quantize", photo_path("kodim23.png"), "-o", "/dev/full", "-k", "2", "--force")
    one_line_error(code, err, "/dev/full")
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert not [p for p in os.listdir("/dev") if p.startswith(".full.")], "temporary file left in /dev"


def test_full_disk_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"the user's file")

    def write_until_disk_full(f):
        f.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left") as err:
        atomic_write(target, write_until_disk_full, force=True)
    assert f"cannot write {target}: No space left on device" in str(err.value)  # the file named
    assert err.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_output_path_that_is_a_folder(tmp_path, capsys):
    (tmp_path / "out.png").mkdir()
    code, _, err = run_cli(capsys, "quantize", photo_path("kodim23.png"), "-o", tmp_path / "out.png", "-k", "2")
    one_line_error(code, err, "folder")


def test_zero_byte_file(tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError):
        load_image(empty)
    code, _, err = run_cli(capsys, "palette", empty, "-k", "2")
    one_line_error(code, err, "empty.png")


def test_wrong_extension_is_read_by_content(tmp_path):
    rgb = np.asarray(Image.open(photo_path("kodim23.png")).convert("RGB"))[:16, :16]
    path = tmp_path / "really-a-png.jpg"
    Image.fromarray(rgb).save(path, format="PNG")
    img = load_image(path)
    np.testing.assert_array_equal(np.asarray(img.pixels), rgb)


def test_one_pixel_image(tmp_path, capsys):
    path = tmp_path / "one.png"
    Image.fromarray(np.array([[[10, 200, 30]]], dtype=np.uint8)).save(path)
    q = quantize(path, 1)
    assert np.asarray(q.palette).tolist() == [[10, 200, 30]]
    # more colors asked than the image has: the palette holds the colors there are
    code, out, _ = run_cli(capsys, "quantize", path, "-o", tmp_path / "q.png", "-k", "2")
    assert code == 0 and "1 colors" in out
    with Image.open(tmp_path / "q.png") as im:
        assert im.mode == "P" and im.size == (1, 1) and im.convert("RGB").getpixel((0, 0)) == (10, 200, 30)
