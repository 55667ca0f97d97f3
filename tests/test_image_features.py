"""Pixel features: coordinates aligned with colors, standardization, CIELAB and OKLab against published values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from pixelkm.image import pixel_features, rgb_to_lab, rgb_to_oklab

# A hand-built 2 x 3 image: pixel (x, y) has color (10 * x + y, 100 + x, 200 - y).
HAND = torch.tensor([[[10 * x + y, 100 + x, 200 - y] for x in range(3)] for y in range(2)], dtype=torch.uint8)
HAND_ROWS = [[x, y, 10 * x + y, 100 + x, 200 - y] for y in range(2) for x in range(3)]  # row-major, by hand


def test_xyrgb_rows_align_coordinates_and_colors():
    f = pixel_features(HAND, "xyrgb", standardize=False)
    assert f.index is None
    np.testing.assert_array_equal(f.X.numpy(), np.array(HAND_ROWS, dtype=np.float32))


def test_mask_keeps_alignment():
    mask = torch.tensor([[True, False, True], [False, True, True]])
    f = pixel_features(HAND, "xyrgb", mask=mask, standardize=False)
    kept = [r for r, m in zip(HAND_ROWS, mask.flatten().tolist()) if m]
    np.testing.assert_array_equal(f.X.numpy(), np.array(kept, dtype=np.float32))
    np.testing.assert_array_equal(f.index.numpy(), [0, 2, 4, 5])
    rgb = pixel_features(HAND, "rgb", mask=mask)
    np.testing.assert_array_equal(rgb.X.numpy(), np.array(kept)[:, 2:])


def test_standardized_like_standard_scaler():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 256, (17, 23, 3), dtype=np.uint8))
    raw = pixel_features(img, "xyrgb", standardize=False).X.numpy().astype(np.float64)
    f = pixel_features(img, "xyrgb")
    np.testing.assert_allclose(f.X.numpy(), StandardScaler().fit_transform(raw), rtol=1e-5, atol=1e-5)
    w = pixel_features(img, "xyrgb", spatial_weight=0.25).X.numpy()
    np.testing.assert_allclose(w[:, :2], 0.25 * f.X.numpy()[:, :2], rtol=1e-6)
    np.testing.assert_array_equal(w[:, 2:], f.X.numpy()[:, 2:])


def test_rgb_is_a_view_of_the_image():
    img = torch.zeros(4, 5, 3, dtype=torch.uint8)
    f = pixel_features(img, "rgb")
    assert f.X.dtype == torch.uint8 and f.X.data_ptr() == img.data_ptr()


# Published values: CIELAB (D65) from the sRGB primaries; OKLab from Ottosson's reference table.
LAB = [
    ((255, 255, 255), (100.0, 0.0, 0.0)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
    ((255, 0, 0), (53.2408, 80.0925, 67.2032)),
    ((0, 255, 0), (87.7347, -86.1827, 83.1793)),
    ((0, 0, 255), (32.2970, 79.1875, -107.8602)),
    ((128, 128, 128), (53.5850, 0.0, 0.0)),
]
OKLAB = [
    ((255, 255, 255), (1.0, 0.0, 0.0)),
    ((255, 0, 0), (0.627955, 0.224863, 0.125846)),
    ((0, 255, 0), (0.866440, -0.233888, 0.179498)),
    ((0, 0, 255), (0.452014, -0.032457, -0.311528)),
]


@pytest.mark.parametrize("fn,table,atol", [(rgb_to_lab, LAB, 2e-3), (rgb_to_oklab, OKLAB, 1e-5)], ids=["lab", "oklab"])
def test_color_spaces(fn, table, atol):
    rgb = torch.tensor([c for c, _ in table], dtype=torch.uint8)
    np.testing.assert_allclose(fn(rgb).numpy(), np.array([v for _, v in table]), atol=atol)


def test_feature_names_checked():
    with pytest.raises(ValueError, match="features must be one of"):
        pixel_features(HAND, "hsv")
    with pytest.raises(ValueError, match="uint8"):
        pixel_features(HAND.float(), "rgb")
    assert pixel_features(HAND, "xylab").X.shape == (6, 5)
