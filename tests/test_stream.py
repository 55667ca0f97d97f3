"""Out-of-core fit: every source gives the in-memory fit; strip reading gives the whole read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_blobs
from PIL import Image

import pixelkm
from pixelkm.estimators.stream import as_source, fit_stream, plan_rows, predict_stream
from pixelkm.io.strips import NpyWriter, read_strips, strip_readable


@pytest.fixture(scope="module")
def blobs():
    X = make_blobs(8000, 3, 6, seed=0)
    init = X[np.random.default_rng(0).choice(len(X), 6, replace=False)]
    return X, init


def _sources(X, tmp_path):
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    chunks = [X[i : i + 1700] for i in range(0, len(X), 1700)]
    return {
        "array": X,
        "memmap": mm,
        "npy-path": str(tmp_path / "x.npy"),
        "list": chunks,
        "callable": lambda: (X[i : i + 999] for i in range(0, len(X), 999)),
        "tensor": torch.from_numpy(X),
    }


@pytest.mark.parametrize("kind", ["array", "memmap", "npy-path", "list", "callable", "tensor"])
@pytest.mark.parametrize("tol", [0.0, 1e-4])
def test_streamed_fit_equals_in_memory_fit(blobs, tmp_path, kind, tol):
    X, init = blobs
    ref = pixelkm.KMeans(6, init=init, tol=tol).fit(X)
    src = _sources(X, tmp_path)[kind]
    got = fit_stream(src, 6, init=init, tol=tol, chunk_rows=2500)
    assert got.n_iter == ref.n_iter_
    np.testing.assert_allclose(got.centers, ref.cluster_centers_, rtol=1e-10, atol=1e-10)
    assert got.inertia == pytest.approx(ref.inertia_, rel=1e-10)
    labels, inertia = predict_stream(src, got.centers, chunk_rows=3000)
    np.testing.assert_array_equal(labels, ref.labels_)
    assert inertia == pytest.approx(ref.inertia_, rel=1e-10)


@pytest.mark.parametrize("kind", ["array", "memmap", "list", "callable"])
@pytest.mark.parametrize("weights_as", ["array", "npy-path", "int-array"])
def test_weighted_streamed_fit_equals_in_memory_fit(blobs, tmp_path, kind, weights_as):
    """Weights read alongside chunks of any size (the list's chunks do not line up with chunk_rows), some of them
    zero, against the in-memory weighted fit; an empty cluster at the start exercises the weighted refill."""
    X, init = blobs
    rng = np.random.default_rng(4)
    w = rng.integers(0, 4, size=len(X)).astype(np.float64)  # a quarter of the rows weigh nothing
    # outliers: the 8 farthest weigh nothing (never taken, however many), the next weighs 3 (it refills the empty
    # cluster and takes its weight 3 out of its old cluster)
    X = np.vstack([X, 60.0 + np.arange(8)[:, None] * np.ones(3), [[45.0, 45.0, 45.0]]])
    w = np.concatenate([w, np.zeros(8), [3.0]])
    init = np.vstack([init[:5], [[1e3, 1e3, 1e3]]])  # far from everything: empty after the first pass
    weights = {"array": w, "npy-path": str(tmp_path / "w.npy"), "int-array": w.astype(np.int64)}[weights_as]
    np.save(tmp_path / "w.npy", w)
    for max_iter in (1, 300):  # the step with the refill, and the whole fit
        ref = pixelkm.KMeans(6, init=init, tol=0, max_iter=max_iter).fit(X, sample_weight=w)
        assert np.isclose(ref.cluster_centers_, [45.0, 45.0, 45.0], atol=1e-9).all(1).any()
        src = _sources(X, tmp_path)[kind]
        got = fit_stream(src, 6, init=init, tol=0, max_iter=max_iter, sample_weight=weights, chunk_rows=2500)
        assert got.n_iter == ref.n_iter_
        np.testing.assert_allclose(got.centers, ref.cluster_centers_, rtol=1e-10, atol=1e-10)
        assert got.inertia == pytest.approx(ref.inertia_, rel=1e-10)


def test_weighted_stream_string_init_and_repeated_rows(blobs):
    """Integer weights are repeated rows: the streamed weighted fit of X equals the streamed fit of the repeats
    (same init drawn from the data, which the weights must steer the same way)."""
    X, _ = blobs
    w = np.random.default_rng(2).integers(1, 3, size=len(X))
    init = X[:6]
    a = fit_stream(X, 6, init=init, sample_weight=w, chunk_rows=1500)
    b = fit_stream(np.repeat(X, w, axis=0), 6, init=init, chunk_rows=1500)
    np.testing.assert_allclose(a.centers, b.centers, rtol=1e-9, atol=1e-9)
    assert a.inertia == pytest.approx(b.inertia, rel=1e-9)
    ours = np.mean([fit_stream(X, 6, random_state=s, sample_weight=w, chunk_rows=3000).inertia for s in range(3)])
    ref = np.mean([pixelkm.KMeans(6, random_state=s).fit(X, sample_weight=w).inertia_ for s in range(3)])
    assert ours <= 1.01 * ref


def test_weighted_histogram_stream_equals_in_memory(photo_u8):
    pixels = photo_u8.reshape(-1, 3)
    w = np.random.default_rng(5).uniform(0, 2, size=len(pixels))
    init = pixels[:: len(pixels) // 5][:5].astype(np.float32)
    ref = pixelkm.KMeans(5, init=init).fit(pixels, sample_weight=w.astype(np.float32))
    got = fit_stream(pixels, 5, init=init, sample_weight=w, chunk_rows=7000)
    assert got.n_distinct == len(np.unique(pixels, axis=0)) and got.n_passes == 1
    np.testing.assert_allclose(got.centers, ref.cluster_centers_, rtol=1e-5, atol=1e-4)
    assert got.n_iter == ref.n_iter_


@pytest.mark.parametrize(
    "weights, match",
    [
        (np.ones(10), "10 values for 8000 rows"),
        (np.ones((8000, 1)), "must be 1-D"),
        (np.where(np.arange(8000) == 7, -1.0, 1.0), "finite and non-negative"),
        (np.where(np.arange(8000) == 7, np.nan, 1.0), "finite and non-negative"),
        (np.zeros(8000), "sums to zero"),
    ],
)
def test_bad_stream_weights(blobs, weights, match):
    X, init = blobs
    with pytest.raises(ValueError, match=match):
        fit_stream(X, 6, init=init, sample_weight=weights, chunk_rows=3000)
    chunks = [X[:5000], X[5000:]]
    with pytest.raises(ValueError, match="fewer than the data's rows|more than the data's rows"):
        fit_stream(chunks, 6, init=init, sample_weight=np.ones(7000), chunk_rows=3000)
    with pytest.raises(ValueError, match="more than the data's rows"):
        fit_stream(chunks, 6, init=init, sample_weight=np.ones(9000), chunk_rows=3000)


def test_memmap_view_is_read_at_its_own_offset(blobs, tmp_path):
    X, _ = blobs
    np.save(tmp_path / "x.npy", X)
    view = np.load(tmp_path / "x.npy", mmap_mode="r")[1000:]
    src = as_source(view)
    np.testing.assert_array_equal(np.concatenate(list(src.chunks(777))), X[1000:])


def test_streamed_empty_clusters_relocate_like_in_memory():
    X = make_blobs(3000, 2, 4, seed=3)
    init = np.vstack([X[:3], [[1e4, 1e4]], [[-1e4, 1e4]]])  # two centers far from everything: empty at step 1
    ref = pixelkm.KMeans(5, init=init, tol=0).fit(X)
    got = fit_stream(X, 5, init=init, tol=0, chunk_rows=400)
    np.testing.assert_allclose(got.centers, ref.cluster_centers_, rtol=1e-10, atol=1e-10)
    assert got.n_iter == ref.n_iter_


def test_streamed_string_init_quality(blobs):
    X, _ = blobs
    ours = np.mean([fit_stream(X, 6, random_state=s, chunk_rows=3000).inertia for s in range(3)])
    ref = np.mean([pixelkm.KMeans(6, random_state=s).fit(X).inertia_ for s in range(3)])
    assert ours <= 1.01 * ref


@pytest.fixture(scope="module")
def photo_u8():
    with Image.open(pixelkm_photo()) as im:
        return np.asarray(im.convert("RGB"))[::3, ::3].copy()


def pixelkm_photo():
    from conftest import photo_path

    return photo_path("kodim05.png")


@pytest.mark.parametrize("fmt", ["npy", "tif", "png"])
def test_image_file_histogram_fit_equals_pixel_fit(photo_u8, tmp_path, fmt):
    path = tmp_path / f"img.{fmt}"
    if fmt == "npy":
        np.save(path, photo_u8)
    else:
        Image.fromarray(photo_u8).save(path)
    pixels = photo_u8.reshape(-1, 3)
    colors = np.unique(pixels, axis=0)
    init = colors[np.random.default_rng(4).choice(len(colors), 8, replace=False)].astype(np.float64)
    ref = pixelkm.KMeans(8, init=init, tol=1e-4).fit(pixels.astype(np.float64))
    got = fit_stream(path, 8, init=init, tol=1e-4, chunk_rows=20000)
    assert got.n_distinct == len(colors)
    assert got.n_iter == ref.n_iter_
    np.testing.assert_allclose(got.centers, ref.cluster_centers_, rtol=1e-5, atol=1e-4)  # float32 on colors
    assert got.inertia == pytest.approx(ref.inertia_, rel=1e-5)
    # the quantized image, written as a .npy by strips, is the palette of the pixel-level labels
    out = tmp_path / "quantized.npy"
    _, inertia = predict_stream(path, got.centers, out, quantize=True, chunk_rows=7000)
    q = np.load(out)
    assert q.shape == photo_u8.shape and q.dtype == np.uint8
    palette = np.clip(np.round(got.centers), 0, 255).astype(np.uint8)
    labels = pixelkm.assign_update(pixels, got.centers).labels  # per pixel, float32 as the stream computes
    np.testing.assert_array_equal(q.reshape(-1, 3), palette[labels])
    assert inertia == pytest.approx(got.inertia, rel=1e-5)


@pytest.mark.parametrize("lut", [True, False], ids=["color-table", "per-chunk-histogram"])
@pytest.mark.parametrize("quantize", [True, False])
def test_predict_uint8_by_color_equals_per_pixel(photo_u8, monkeypatch, lut, quantize):
    from pixelkm.estimators import stream as _stream

    monkeypatch.setattr(_stream, "_use_lut", lambda n, d: lut)
    d = 2 if lut else 3  # a table of 2^16 colors keeps the test fast; 2^24 works the same way
    pixels = np.ascontiguousarray(photo_u8.reshape(-1, 3)[:, :d])
    centers = np.random.default_rng(5).uniform(0, 255, (7, d)).astype(np.float32)
    ref = pixelkm.assign_update(pixels, centers)
    got, inertia = predict_stream(pixels, centers, quantize=quantize, chunk_rows=5000)
    want = ref.labels
    if quantize:
        want = np.clip(np.round(centers), 0, 255).astype(np.uint8)[want]
    np.testing.assert_array_equal(got, want)
    assert inertia == pytest.approx(float(ref.min_sq_dist.astype(np.float64).sum()), rel=1e-6)


def test_one_shot_iterator_histogram_only(photo_u8):
    pixels = photo_u8.reshape(-1, 3)
    one_shot = iter([pixels[:20000], pixels[20000:]])
    got = fit_stream(one_shot, 4, random_state=0)
    assert got.n_passes == 1 and got.n_distinct == len(np.unique(pixels, axis=0))
    with pytest.raises(ValueError, match="one-shot"):
        fit_stream(iter([pixels.astype(np.float32)]), 4, random_state=0)


@pytest.mark.parametrize("fmt", ["npy", "ppm", "pgm", "tif", "bmp", "png"])
def test_strips_equal_whole_read(photo_u8, tmp_path, fmt):
    img = photo_u8[:, :-1]  # odd width: BMP rows are padded to 4 bytes
    path = tmp_path / f"img.{fmt}"
    if fmt == "npy":
        np.save(path, img)
        whole = img
    else:
        Image.fromarray(img).convert("L" if fmt == "pgm" else "RGB").save(path)
        with Image.open(path) as im:
            whole = np.asarray(im)
    assert strip_readable(path) == (fmt != "png")
    strips = list(read_strips(path, rows=37))
    assert [y for y, _ in strips] == list(range(0, img.shape[0], 37))
    np.testing.assert_array_equal(np.concatenate([s for _, s in strips]), whole)


def test_multi_strip_tiff(photo_u8, tmp_path):
    path = tmp_path / "strips.tif"
    Image.fromarray(photo_u8).save(path, strip_size=3 * photo_u8.shape[1] * 10)  # 10 rows per strip
    np.testing.assert_array_equal(np.concatenate([s for _, s in read_strips(path, rows=23)]), photo_u8)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_compressed_image_over_the_limits_is_refused_before_decoding(photo_u8, tmp_path, monkeypatch, fmt):
    """A PNG or JPEG is decoded whole: above the pixel limit or the free memory it is refused with a clear error
    (before any decoding), while a raw file of the same size is still read in strips."""
    from pixelkm.image import ImageTooLargeError
    from pixelkm.io import strips as _strips

    path, raw = tmp_path / f"img.{fmt}", tmp_path / "img.tif"
    Image.fromarray(photo_u8).save(path)
    Image.fromarray(photo_u8).save(raw)
    h, w = photo_u8.shape[:2]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", h * w - 1)
    with pytest.raises(ImageTooLargeError, match=r"cannot be read in strips.*uncompressed TIFF.*max_pixels"):
        next(read_strips(path))
    assert sum(s.shape[0] for _, s in read_strips(path, max_pixels=h * w)) == h  # a raised limit lets it through
    np.testing.assert_array_equal(np.concatenate([s for _, s in read_strips(raw, rows=100)]), photo_u8)
    with pytest.raises(ImageTooLargeError, match=r"img\.(png|jpg)"):
        fit_stream(str(path), 4, random_state=0)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    monkeypatch.setattr(_strips, "available_memory", lambda: 1 << 16)
    need = f"{h * w * 3 / 2**20:.1f}"
    with pytest.raises(ImageTooLargeError, match=rf"needs {need} MiB, more than the 0\.1 MiB of memory available"):
        next(read_strips(path))
    assert strip_readable(raw) and not strip_readable(path)


def test_npy_writer_checks_size(tmp_path):
    with pytest.raises(ValueError, match="never written"), NpyWriter(tmp_path / "a.npy", (4, 3), np.uint8) as w:
        w.write(np.zeros((3, 3), np.uint8))
    with NpyWriter(tmp_path / "b.npy", (4, 3), np.uint8) as w:
        w.write(np.arange(12, dtype=np.uint8).reshape(4, 3))
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), np.arange(12).reshape(4, 3))


def test_device_memory_cap_plans_small_chunks():
    rows, block = plan_rows(3, 1, 16, torch.device("cuda"), 2 << 30)
    assert 2 * rows * 3 + rows * 12 + block * 12 * (3 + 16) <= 2 << 30
    with pytest.raises(ValueError, match="max_device_memory"):
        plan_rows(3, 1, 16, torch.device("cuda"), 1000)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_streamed_fit_on_cuda_with_memory_cap(blobs):
    X, init = blobs
    ref = pixelkm.KMeans(6, init=init, tol=0).fit(X)
    got = fit_stream(X, 6, init=init, tol=0, device="cuda", max_device_memory=1 << 20)
    np.testing.assert_allclose(got.centers, ref.cluster_centers_, rtol=1e-10, atol=1e-10)


# -- what a hostile review found (each failed before its fix) -------------------------------------------------


def test_predict_stream_never_replaces_the_file_behind_a_memmap_view(tmp_path):
    p = tmp_path / "src.npy"
    np.save(p, np.random.default_rng(0).random((1000, 3)).astype(np.float32))
    before = p.read_bytes()
    mm = np.load(p, mmap_mode="r")
    for view in (mm, mm[::2], np.asarray(mm), mm[:, :2]):
        with pytest.raises(ValueError, match="it is the input file"):
            predict_stream(view, view[:3], p, force=True)
    assert p.read_bytes() == before


def test_a_failed_commit_leaves_no_temporary_file(tmp_path, blobs):
    from pixelkm.io.files import TempFile

    X, _ = blobs
    target = tmp_path / "out.npy"
    t = TempFile(target)
    t.file.write(b"x" * 100)
    target.write_bytes(b"the user's file, written meanwhile")
    with pytest.raises(FileExistsError):
        t.commit()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out.npy"]
    assert target.read_bytes() == b"the user's file, written meanwhile"
    # a dangling symlink is an existing output: refused before any work
    link = tmp_path / "link.npy"
    link.symlink_to(tmp_path / "nowhere.npy")
    with pytest.raises(FileExistsError, match="exists"):
        predict_stream(X, X[:3], link)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["link.npy", "out.npy"]


def test_predict_stream_into_an_array_checks_it(blobs):
    X, C = blobs
    with pytest.raises(ValueError, match="C-contiguous"):
        predict_stream(X, C, np.zeros((len(X), 2), np.uint8)[:, 0])
    with pytest.raises(ValueError, match="the source has more"):
        predict_stream(X, C, np.zeros(len(X) - 1, np.uint8))
    with pytest.raises(ValueError, match="holds 2001 rows, the source 2000"):
        predict_stream(X[:2000], C, np.zeros(2001, np.uint8))
    out = np.zeros(len(X), np.int64)
    labels, _ = predict_stream(X, C)
    predict_stream(X, C, out)
    np.testing.assert_array_equal(out, labels)


def test_stream_sources_refuse_what_they_cannot_read(tmp_path, blobs):
    X, _ = blobs
    p = tmp_path / "four.npy"
    np.save(p, np.zeros((10, 10, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"this file holds shape \(10, 10, 3, 2\)"):
        fit_stream(p, 2)
    calls = [0]

    def changing():  # a callable that yields other rows on its second call
        calls[0] += 1
        return [X[:1000]] if calls[0] <= 2 else [X[:1500]]  # (the first call peeks at the first chunk)

    with pytest.raises(ValueError, match="a callable must return the same chunks"):
        fit_stream(changing, 3, init=X[:3], max_iter=5, tol=0)
    with pytest.raises(ValueError, match=r"predict_stream writes \.npy files"):
        predict_stream(X, X[:2], tmp_path / "q.png", quantize=True)
    img = tmp_path / "gray.pgm"
    Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5) * 10, "L").save(img)
    predict_stream(img, np.array([[0.0], [200.0]]), tmp_path / "gray.npy")
    assert np.load(tmp_path / "gray.npy").shape == (4, 5)  # the image's shape, as for RGB images
    for rows in (0, -1, 2.5):
        with pytest.raises(ValueError, match="rows must be a positive int"):
            list(read_strips(img, rows))


def test_a_source_that_exits_on_the_reader_thread_does_not_hang():
    import subprocess
    import sys

    code = (
        "import numpy as np, pixelkm\n"
        "X = np.random.default_rng(0).random((3000, 3), dtype=np.float32)\n"
        "def chunks():\n"
        "    yield X[:1000]\n"
        "    raise SystemExit('the producer gave up')\n"
        "pixelkm.predict_stream(chunks, X[:2])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "the producer gave up" in r.stderr
