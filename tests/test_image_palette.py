"""Palettes: CIEDE2000 against Sharma's published pairs; near-duplicate shades merged, small accents kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import photo_path
from PIL import Image

import pixelkm.image as pim

# Sharma, Wu, Dalal (2005), "The CIEDE2000 color-difference formula", table 1 (pairs 1, 2, 4, 7, 12, 17, 19,
# 25, 34): Lab 1, Lab 2, Delta E 2000
SHARMA = [
    ((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425),
    ((50, 3.1571, -77.2803), (50, 0, -82.7485), 2.8615),
    ((50, -1.3802, -84.2814), (50, 0, -82.7485), 1.0000),
    ((50, 0, 0), (50, -1, 2), 2.3669),
    ((50, 2.5, 0), (50, 0, -2.5), 4.3065),
    ((50, 2.5, 0), (73, 25, -18), 27.1492),
    ((50, 2.5, 0), (50, 3.1736, 0.5854), 1.0000),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082),
]


def test_ciede2000_matches_sharmas_table():
    a = torch.tensor([p[0] for p in SHARMA], dtype=torch.float64)
    b = torch.tensor([p[1] for p in SHARMA], dtype=torch.float64)
    want = np.array([p[2] for p in SHARMA])
    np.testing.assert_allclose(pim.ciede2000(a, b).numpy(), want, atol=1e-4)
    np.testing.assert_allclose(pim.ciede2000(b, a).numpy(), want, atol=1e-4)  # symmetric
    assert float(pim.ciede2000(a[:1], a[:1])) == 0


@pytest.fixture(scope="module")
def accent_photo():
    """kodim13 (a muted landscape) at a quarter size with a small saturated magenta disc (about 1.5%)."""
    with Image.open(photo_path("kodim13.png")) as im:
        img = np.asarray(im.convert("RGB"))[::4, ::4].copy()
    H, W, _ = img.shape
    yy, xx = np.mgrid[0:H, 0:W]
    disc = (yy - H * 0.3) ** 2 + (xx - W * 0.7) ** 2 < (0.07 * min(H, W)) ** 2 * 1.6
    img[disc] = (235, 20, 160)
    return img, disc


def _closest_delta_e(colors, target):
    lab = pim.rgb_to_lab(torch.as_tensor(np.asarray(colors, np.uint8)))
    t = pim.rgb_to_lab(torch.tensor([target], dtype=torch.uint8))
    return float(pim.ciede2000(lab, t).min())


def test_six_color_palette_keeps_a_small_accent(accent_photo):
    img, disc = accent_photo
    assert 0.005 < disc.mean() < 0.03
    r = pim.palette(img, 6)
    assert r.colors.shape[0] == 6
    assert _closest_delta_e(r.colors, (235, 20, 160)) < 5  # the accent is one of the six
    share = r.proportions[np.argmin([_closest_delta_e([c], (235, 20, 160)) for c in r.colors])]
    assert share == pytest.approx(disc.mean(), abs=0.005)  # with its share
    # the near-duplicate shades it replaced: plain k-means spends its colors on close shades instead
    plain = pim.palette(img, 6, oversample=1)
    assert r.min_delta_e >= plain.min_delta_e


def test_min_delta_e_merges_close_shades(accent_photo):
    img, _ = accent_photo
    r = pim.palette(img, 8, min_delta_e=15)
    lab = pim.rgb_to_lab(torch.as_tensor(r.colors))
    d = pim.ciede2000(lab[:, None], lab[None]).numpy()
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 15 and r.min_delta_e == pytest.approx(d.min())
    assert r.colors.shape[0] < 8 and r.proportions.sum() == pytest.approx(1)
    assert np.all(np.diff(r.proportions) <= 0)
    d = r.to_dict()
    assert d["min_delta_e"] == pytest.approx(r.min_delta_e, abs=1e-3)


def test_merge_shades_hand_checked():
    colors = torch.tensor([[200.0, 0, 0], [202, 0, 0], [0, 0, 200], [0, 200, 0]], dtype=torch.float64)
    counts = torch.tensor([50.0, 30, 15, 5])
    from pixelkm.image._palette import merge_shades

    g = merge_shades(colors, counts, 3, 0.0, 0.0)
    assert g.tolist() == [0, 0, 2, 3]  # the two reds merge; the small green accent stays
    g = merge_shades(colors, counts, 3, 0.0, 0.06)  # below 6%: the green speck joins its nearest color
    assert g[3] != 3 and len(set(g.tolist())) == 3  # three colors asked: the reds stay apart


def test_palette_errors(accent_photo):
    img, _ = accent_photo
    with pytest.raises(ValueError, match="min_delta_e"):
        pim.palette(img, 4, min_delta_e=-1)
    with pytest.raises(ValueError, match="oversample"):
        pim.palette(img, 4, oversample=0)
    with pytest.raises(ValueError, match="min_share"):
        pim.palette(img, 4, min_share=1.5)
    with pytest.raises(ValueError, match="clusters colors"):
        pim.palette(img, 4, features="xyrgb")
