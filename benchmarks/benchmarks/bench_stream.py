"""Streamed fits: data read chunk by chunk instead of held in memory (or on the device) whole.

``StreamedFit`` is exact Lloyd out of core, ``fit_stream`` on a float32 ``.npy`` file opened as a memmap, against
the same fit in memory (``pixelkm.KMeans``) and scikit-learn's ``KMeans`` in memory as the baseline: same explicit
init, ``tol=0``, ``N_ITER`` iterations checked to have run. ``MiniBatch`` is one epoch of ``partial_fit`` over
chunks, pixelkm's ``MiniBatchKMeans`` against scikit-learn's, and the inertia after ``EPOCHS`` epochs.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np

from . import common

N_ITER = 5
EPOCHS = 3


class StreamedFit:
    params: ClassVar[list] = [common.IMPLEMENTATIONS, ["memory", "npy"], common.grid([1 << 20], [1 << 24]), [8, 64]]
    param_names: ClassVar[list] = ["impl", "source", "n", "k"]
    timeout = 900
    number = 1
    repeat = (1, 3, 30.0)
    warmup_time = 0.0

    def setup(self, impl, source, n, k):
        common.check_impl(impl)
        name, device = common.split_impl(impl)
        X = common.uniform(common.points(n), 3)
        centers = common.initial_centers(X, k, sample=8192)
        self.tmp = None
        if source == "memory":
            self.data = common.to_device(X, impl)
            self.fit = common.fixed_iteration_fit(impl, k, centers, N_ITER)
        elif name == "sklearn":
            raise NotImplementedError("scikit-learn's KMeans needs its data in memory")
        else:
            from pixelkm import fit_stream

            self.tmp = Path(tempfile.mkdtemp(prefix="pixelkm-bench-"))
            np.save(self.tmp / "x.npy", X)
            self.data = np.load(self.tmp / "x.npy", mmap_mode="r")
            del X

            def fit(data):
                res = fit_stream(data, k, init=centers, max_iter=N_ITER, tol=0.0, backend=name, device=device)
                common.sync(impl)
                return common.FitResult(float(res.inertia), int(res.n_iter))

            self.fit = fit
        self.impl = impl
        self.result = self.fit(self.data)  # warm-up, and the check that N_ITER iterations really run
        common.check_iterations(impl, self.result, N_ITER)

    def teardown(self, impl, source, n, k):
        if getattr(self, "tmp", None) is not None:  # asv runs teardown after a skipping setup too
            shutil.rmtree(self.tmp, ignore_errors=True)

    def time_fit(self, impl, source, n, k):
        self.fit(self.data)

    def peakmem_fit(self, impl, source, n, k):
        self.fit(self.data)

    def track_inertia(self, impl, source, n, k):
        return self.result.inertia

    track_inertia.unit = "inertia"


class MiniBatch:
    params: ClassVar[list] = [common.IMPLEMENTATIONS, common.grid([1 << 20], [1 << 24]), [1 << 16], [8, 64]]
    param_names: ClassVar[list] = ["impl", "n", "batch", "k"]
    timeout = 900
    number = 1
    repeat = (1, 3, 30.0)
    warmup_time = 0.0

    def setup(self, impl, n, batch, k):
        common.check_impl(impl)
        name, device = common.split_impl(impl)
        X = common.uniform(common.points(n), 3)
        batch = min(batch, max(1, len(X) // 4))
        self.batches = [common.to_device(X[i : i + batch], impl) for i in range(0, len(X), batch)]
        centers = common.initial_centers(X, k, sample=8192)
        opts = {"init": centers, "n_init": 1, "batch_size": batch, "random_state": 0}
        if name == "sklearn":
            from sklearn.cluster import MiniBatchKMeans

            self.make = lambda: MiniBatchKMeans(k, **opts)
        else:
            from pixelkm import MiniBatchKMeans

            self.make = lambda: MiniBatchKMeans(k, backend=name, device=device, **opts)
        self.impl = impl
        self.model = self.make()
        for _ in range(EPOCHS):  # warm-up, and the model that track_inertia scores
            self.epoch(self.model)
        self.X = common.to_device(X, impl)

    def epoch(self, model):
        for x in self.batches:
            model.partial_fit(x)
        common.sync(self.impl)

    def time_epoch(self, impl, n, batch, k):
        self.epoch(self.make())

    def peakmem_epoch(self, impl, n, batch, k):
        self.epoch(self.make())

    def track_inertia(self, impl, n, batch, k):
        """Inertia on all the points after EPOCHS epochs of partial_fit."""
        return -float(self.model.score(self.X))

    track_inertia.unit = "inertia"
