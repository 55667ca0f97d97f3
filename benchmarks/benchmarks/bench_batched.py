"""Batched fits: b independent problems (64x64 tiles of a photograph, one palette per tile) in one call.

``batched`` is ``pixelkm.kmeans`` on X of shape (b, 4096, 3); ``loop`` fits the same tiles one after the other
(pixelkm or scikit-learn). Every problem starts from its own k-means++ centers (shared by all implementations),
``tol=0``, at most ``MAX_ITER`` iterations: a problem stops when its labels stop changing, the same rule in
both libraries, so each does the same work.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from . import common

MAX_ITER = 20
TILE = 64


def tiles(image: np.ndarray, b: int) -> np.ndarray:
    """The first ``b`` TILE x TILE tiles of ``image`` (row-major), as float32 of shape (b, TILE*TILE, 3)."""
    H, W, _ = image.shape
    t = image[: H - H % TILE, : W - W % TILE].reshape(H // TILE, TILE, W // TILE, TILE, 3).swapaxes(1, 2)
    return np.ascontiguousarray(t.reshape(-1, TILE * TILE, 3)[:b].astype(np.float32))


class BatchedFit:
    params: ClassVar[list] = [common.IMPLEMENTATIONS, ["batched", "loop"], common.grid([16, 64], [256, 1024]), [8]]
    param_names: ClassVar[list] = ["impl", "mode", "b", "k"]
    timeout = 900
    number = 1
    repeat = (1, 5, 30.0)
    warmup_time = 0.0

    def setup(self, impl, mode, b, k):
        common.check_impl(impl)
        name, device = common.split_impl(impl)
        if name == "sklearn" and mode == "batched":
            raise NotImplementedError("scikit-learn has no batched fit")
        if common.tiny():  # two small problems
            X = common.photo_pixels(None).reshape(2, -1, 3)
        else:
            X = tiles(common.photo(max(1024, TILE * int(np.ceil(np.sqrt(b))))), b)  # enough tiles for b
        init = np.stack([common.initial_centers(x, k, seed=i) for i, x in enumerate(X)])
        if name == "sklearn":
            from sklearn.cluster import KMeans

            def fit():
                fits = [KMeans(k, init=c, n_init=1, max_iter=MAX_ITER, tol=0.0).fit(x) for x, c in zip(X, init)]
                return sum(f.inertia_ for f in fits)

        else:
            import pixelkm

            Xd = common.to_device(X, impl)
            opts = {"n_init": 1, "max_iter": MAX_ITER, "tol": 0.0, "backend": name, "device": device}

            def fit():
                if mode == "batched":
                    inertia = pixelkm.kmeans(Xd, k, init=init, **opts)[2].sum()
                else:
                    inertia = sum(pixelkm.kmeans(x, k, init=c, **opts)[2] for x, c in zip(Xd, init))
                common.sync(impl)
                return float(inertia)

        self.fit = fit
        self.inertia = fit()  # warm-up, and the result that track_inertia reports

    def time_fit(self, impl, mode, b, k):
        self.fit()

    def peakmem_fit(self, impl, mode, b, k):
        self.fit()

    def track_inertia(self, impl, mode, b, k):
        """Sum of the b problems' inertias."""
        return self.inertia

    track_inertia.unit = "inertia"
