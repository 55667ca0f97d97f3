"""Synthetic product photos with known masks: what background removal is measured on (and what the demo shows).

A scene is an object (a bottle, a box with a label, a ball, a mug; some with parts close to the background
color) on a background (plain, gradient, vignette, textured, soft shadow, blurred photo), drawn
deterministically from a seed. The mask is the object's exact coverage (shadows are background).
"""

from __future__ import annotations

from importlib import resources

import numpy as np
from PIL import Image

#: (name, background, object): the scenes of the background-removal benchmark and test
SCENES = (
    ("plain-bottle", "plain", "bottle"),
    ("plain-lightbox", "plain", "lightbox"),
    ("gradient-ball", "gradient", "ball"),
    ("gradient-bottle", "gradient", "bottle"),
    ("vignette-box", "vignette", "box"),
    ("vignette-ball", "vignette", "ball"),
    ("textured-bottle", "textured", "bottle"),
    ("textured-box", "textured", "box"),
    ("shadow-ball", "shadow", "ball"),
    ("shadow-lightbox", "shadow", "lightbox"),
    ("photo-mug", "photo", "mug"),
    ("colored-mug", "colored", "mug"),
)


def _smooth_noise(rng: np.random.Generator, H: int, W: int, cell: int) -> np.ndarray:
    """Value noise in -1..1: random values on a coarse grid, bicubically upsampled."""
    g = rng.uniform(-1, 1, (H // cell + 2, W // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(g, "F").resize((W, H), Image.BICUBIC), dtype=np.float32)


def _background(kind: str, H: int, W: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    u, v = xx / (W - 1) * 2 - 1, yy / (H - 1) * 2 - 1
    base = np.array(rng.choice([(246, 246, 244), (238, 240, 245), (250, 247, 240)]), np.float32)
    if kind in ("plain", "shadow"):
        bg = np.broadcast_to(base, (H, W, 3)).copy()
    elif kind == "colored":
        bg = np.broadcast_to(np.array((170, 200, 228), np.float32), (H, W, 3)).copy()
    elif kind == "gradient":
        top, bottom = np.array((250, 250, 252), np.float32), np.array((175, 185, 200), np.float32)
        t = (v[..., None] + 1) / 2
        bg = top * (1 - t) + bottom * t
    elif kind == "vignette":
        r2 = (u**2 + v**2)[..., None] / 2
        bg = base * (1 - 0.45 * r2)
    elif kind == "textured":
        n = _smooth_noise(rng, H, W, 6) * 14 + rng.normal(0, 4, (H, W)).astype(np.float32)
        stripes = 6 * np.sin(xx * 0.9 + yy * 0.3)
        bg = np.array((222, 208, 186), np.float32) + (n + stripes)[..., None]
    elif kind == "photo":
        path = resources.files("pixelkm") / "data" / "kodim23.png"
        with Image.open(str(path)) as im:
            ph = im.convert("RGB").resize((W, H), Image.BILINEAR)
        from PIL import ImageFilter

        ph = ph.filter(ImageFilter.GaussianBlur(radius=max(H, W) / 40))
        bg = np.asarray(ph, np.float32) * 0.5 + 120  # blurred and washed out, as a studio backdrop
    else:
        raise ValueError(f"unknown background {kind!r}")
    return bg


def _object(kind: str, H: int, W: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (H, W) in 0..1 (4x supersampled edges) and colors (H, W, 3) of the object.

    The sample coordinates are a column ``yy`` (H S, 1) and a row ``xx`` (1, W S) that broadcast: every value is
    the one a full grid gives, at the cost of the shapes that need both."""
    S = 4
    HS, WS = H * S, W * S
    yy = (np.arange(HS, dtype=np.float32) / S)[:, None]
    xx = (np.arange(WS, dtype=np.float32) / S)[None, :]
    cx, cy = W * rng.uniform(0.42, 0.58), H * rng.uniform(0.45, 0.55)
    s = min(H, W)
    col = np.zeros((HS, WS, 3), np.float32)
    cov = np.zeros((HS, WS), bool)
    hue = np.array(rng.choice([(200, 40, 50), (30, 110, 200), (40, 150, 80), (230, 160, 30)]), np.float32)
    shade_row = 0.75 + 0.25 * np.cos((xx - cx) / (0.35 * s) * np.pi / 2).clip(-1, 1)  # (1, W S): a function of x

    def shaded(color: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``(color * shade)[mask]`` with shade (H S, W S, 1), from its one row."""
        return color * np.broadcast_to(shade_row, (HS, WS))[mask][:, None]

    if kind == "bottle":
        body = (np.abs(xx - cx) < 0.14 * s) & (np.abs(yy - cy - 0.08 * s) < 0.28 * s)
        neck = (np.abs(xx - cx) < 0.05 * s) & (yy > cy - 0.36 * s) & (yy < cy - 0.15 * s)
        cap = (np.abs(xx - cx) < 0.06 * s) & (yy > cy - 0.40 * s) & (yy <= cy - 0.34 * s)
        label = body & (np.abs(yy - cy - 0.08 * s) < 0.09 * s)
        col[body | neck] = shaded(hue, body | neck)
        col[label] = shaded(np.array((236, 236, 232), np.float32), label)  # a label close to white
        col[cap] = (30, 30, 32)
        cov = body | neck | cap
    elif kind in ("box", "lightbox"):
        box = (np.abs(xx - cx) < 0.26 * s) & (np.abs(yy - cy) < 0.2 * s)
        top = box & (yy < cy - 0.12 * s)
        base = np.array((214, 212, 205), np.float32) if kind == "lightbox" else hue
        col[box] = shaded(base, box)
        col[top] = (base * 0.85)[None].repeat(int(top.sum()), 0)
        stripe = box & (np.abs(yy - cy - 0.05 * s) < 0.03 * s)
        col[stripe] = hue * 0.8
        cov = box
    elif kind == "ball":
        r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (0.3 * s) ** 2
        cov = r2 < 1
        light = (1.05 - 0.45 * ((xx - cx + 0.1 * s) ** 2 + (yy - cy + 0.1 * s) ** 2) / (0.3 * s) ** 2).clip(0.5, 1.05)
        col[cov] = hue[None] * light[cov][:, None]
        highlight = ((xx - cx + 0.12 * s) ** 2 + (yy - cy + 0.12 * s) ** 2) < (0.05 * s) ** 2
        col[highlight] = (245, 245, 245)  # a specular highlight: background-colored, inside the object
    elif kind == "mug":
        body = (np.abs(xx - cx) < 0.18 * s) & (np.abs(yy - cy) < 0.22 * s)
        handle = (((xx - cx - 0.2 * s) ** 2 + (yy - cy) ** 2) < (0.1 * s) ** 2) & (xx > cx + 0.17 * s)
        cov = body | handle
        col[cov] = shaded(np.array((240, 238, 230), np.float32), cov)  # a white mug
        band = body & (np.abs(yy - cy + 0.05 * s) < 0.05 * s)
        col[band] = hue
    else:
        raise ValueError(f"unknown object {kind!r}")
    coverage = cov.reshape(H, S, W, S).mean(axis=(1, 3))
    colors = (col * cov[..., None]).reshape(H, S, W, S, 3).sum(axis=(1, 3)) / np.maximum(
        cov.reshape(H, S, W, S).sum(axis=(1, 3)), 1
    )[..., None]
    return coverage, colors


def product_scene(
    background: str = "shadow", obj: str = "bottle", *, size: tuple[int, int] = (240, 320), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic product photo: uint8 (H, W, 3) image and bool (H, W) mask of the object (coverage > 1/2).

    ``background`` is "plain", "colored", "gradient", "vignette", "textured", "shadow" or "photo"; ``obj``
    is "bottle", "box", "lightbox" (a light gray box close to a white background), "ball" (with a white
    highlight) or "mug" (a white mug with a handle). Mild sensor noise is added.
    """
    H, W = size
    rng = np.random.default_rng(seed)
    bg = _background(background, H, W, rng)
    coverage, colors = _object(obj, H, W, rng)
    if background == "shadow":
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        ys, xs = np.nonzero(coverage > 0.5)
        cy, cx = ys.max(), xs.mean() + 0.05 * W
        d = ((xx - cx) / (0.35 * W)) ** 2 + ((yy - cy) / (0.07 * H)) ** 2
        soft = np.exp(-d * 2)[..., None]
        bg = bg * (1 - 0.35 * soft)
    a = coverage[..., None]
    img = bg * (1 - a) + colors * a + rng.normal(0, 1.5, (H, W, 1)).astype(np.float32)
    return np.clip(img, 0, 255).round().astype(np.uint8), coverage > 0.5


def scene(name: str, *, size: tuple[int, int] = (240, 320), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark scene called ``name`` (see :data:`SCENES`)."""
    for i, (n, bg, obj) in enumerate(SCENES):
        if n == name:
            return product_scene(bg, obj, size=size, seed=seed * len(SCENES) + i)
    raise ValueError(f"unknown scene {name!r}; scenes: {', '.join(n for n, _, _ in SCENES)}")
