"""Shared fixtures: the photographs in ../shared/images and small random data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Triton kernels run on the CPU under the interpreter; it must be set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
#: the photographs: ../shared/images beside the checkout, or the folder named by PIXELKM_IMAGES
IMAGES = Path(os.environ.get("PIXELKM_IMAGES") or REPO.parent / "shared" / "images")
PHOTOS = ["kodim03.png", "kodim05.png", "kodim13.png", "kodim20.png", "kodim23.png"]


def photo_path(name: str) -> Path:
    path = IMAGES / name
    if not path.exists():
        pytest.fail(f"test photograph {path} is missing: the checkout needs ../shared/images beside it")
    return path


@pytest.fixture(scope="session")
def photo_pixels():
    """Return a loader: photo name -> (H*W, 3) uint8 NumPy array, optionally subsampled by ``step``."""
    from PIL import Image

    cache: dict[tuple[str, int], np.ndarray] = {}

    def load(name: str, step: int = 1) -> np.ndarray:
        key = (name, step)
        if key not in cache:
            with Image.open(photo_path(name)) as im:
                arr = np.asarray(im.convert("RGB"))
            cache[key] = np.ascontiguousarray(arr[::step, ::step].reshape(-1, 3))
        return cache[key]

    return load


def make_blobs(n: int, d: int, k: int, seed: int, spread: float = 1.0, scale: float = 10.0) -> np.ndarray:
    """Gaussian blobs without scikit-learn: k centers in a box of side ``scale``, unit-ish noise."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-scale, scale, size=(k, d))
    labels = rng.integers(0, k, size=n)
    return centers[labels] + rng.normal(scale=spread, size=(n, d))


def count_calls(monkeypatch, owner, name: str) -> list:
    """Replace ``owner.name`` (a module's function or class, or a class's method) by a wrapper that appends 1 to the
    returned list at every call and then calls the original."""
    calls, real = [], getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


#: tests that are slow on a CPU only (they run in the default suite where CUDA is available)
SLOW_ON_CPU = {"test_contention_precision_k2"}  # 2^20 points through the Triton interpreter


def pytest_collection_modifyitems(config, items):
    """Markers from what a test needs: ``gpu`` for the tests that skip without CUDA, ``interpreter`` for the Triton
    tests that run on the CPU under TRITON_INTERPRET=1, ``slow`` for the interpreter runs on large inputs."""
    cuda = torch.cuda.is_available()
    for item in items:
        reasons = " ".join(str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))
        if "CUDA" in reasons or "GPU" in reasons:
            item.add_marker(pytest.mark.gpu)
        if item.module.__name__ == "test_triton" and not cuda:
            item.add_marker(pytest.mark.interpreter)
            if item.originalname in SLOW_ON_CPU:
                item.add_marker(pytest.mark.slow)
