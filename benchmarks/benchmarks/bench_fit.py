"""Fitting k-means: pixelkm's backends against scikit-learn's KMeans over n, k, d and dtype.

``KMeansFit`` times a fit of exactly ``N_ITER`` Lloyd iterations from shared explicit centers (uniform data, so
no one converges early), so that the times compare the same work. ``DefaultFit`` runs each library with its own
defaults (seeded k-means++, ``tol=1e-4``) on photo pixels: the time a user waits and the inertia they get.
"""

from __future__ import annotations

from typing import ClassVar

from . import common

N_ITER = 5


class _FitCase:
    """Setup shared by the fixed-iteration fit benchmarks: data, shared init, a checked warm-up fit."""

    params: ClassVar[list] = [
        common.IMPLEMENTATIONS,
        common.grid([10_000, 100_000], [1_000_000, 10_000_000]),
        common.grid([8, 64], [256]),
        common.grid([3, 16], [64]),
        ["float32", "float64"],
    ]
    param_names: ClassVar[list] = ["impl", "n", "k", "d", "dtype"]
    timeout = 900
    number = 1
    repeat = (1, 5, 30.0)
    warmup_time = 0.0

    def setup(self, impl, n, k, d, dtype):
        common.check_impl(impl)
        X = common.uniform(common.points(n), d, dtype)
        centers = common.initial_centers(X, k, sample=8192)
        self.X = common.to_device(X, impl)
        self.fit = common.fixed_iteration_fit(impl, k, centers, N_ITER)
        self.result = self.fit(self.X)  # warm-up, and the check that N_ITER iterations really run
        common.check_iterations(impl, self.result, N_ITER)


class KMeansFit(_FitCase):
    def time_fit(self, impl, n, k, d, dtype):
        self.fit(self.X)

    def peakmem_fit(self, impl, n, k, d, dtype):
        self.fit(self.X)

    def track_inertia(self, impl, n, k, d, dtype):
        """Inertia after N_ITER iterations from the shared centers: equal to scikit-learn's up to rounding."""
        return self.result.inertia

    track_inertia.unit = "inertia"


class KMeansFitGPU(_FitCase):
    params: ClassVar[list] = [[i for i in common.IMPLEMENTATIONS if i.endswith("-cuda")], *_FitCase.params[1:]]

    def track_gpu_peak_mib(self, impl, n, k, d, dtype):
        """Peak CUDA memory allocated by one fit beyond the data already on the device, in MiB."""
        import torch

        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        self.fit(self.X)
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    track_gpu_peak_mib.unit = "MiB"


class DefaultFit:
    """Each library's defaults (seeded k-means++, tol=1e-4, n_init=1) on the pixels of a test photograph."""

    params: ClassVar[list] = [common.IMPLEMENTATIONS, common.grid([256], ["native", 1024]), [8, 64]]
    param_names: ClassVar[list] = ["impl", "size", "k"]
    timeout = 900
    number = 1
    repeat = (1, 3, 30.0)
    warmup_time = 0.0

    def setup(self, impl, size, k):
        common.check_impl(impl)
        self.X = common.to_device(common.photo_pixels(size), impl)
        self.fit = common.default_fit(impl, k)
        self.result = self.fit(self.X)

    def time_fit(self, impl, size, k):
        self.fit(self.X)

    def track_inertia(self, impl, size, k):
        return self.result.inertia

    track_inertia.unit = "inertia"

    def track_n_iter(self, impl, size, k):
        return self.result.n_iter

    track_n_iter.unit = "iterations"
