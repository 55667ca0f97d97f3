"""Issue 2's CPU comparison under asv: seconds of a fixed-iteration fit on a 1024x1024 photo, K = 8 and 64.

The same measurement as ``benchmarks/cpu_lloyd.py`` (which prints seconds per iteration and the ratio in one
run): float32 RGB pixels, scikit-learn's k-means++ on a seeded subsample as the shared explicit init, ``tol=0``,
``N_ITER`` iterations checked to have run. Divide ``time_fit`` by ``N_ITER`` for seconds per iteration.
"""

from __future__ import annotations

from typing import ClassVar

from . import common

N_ITER = 5
IMPLS = {"pixelkm": "torch-cpu", "sklearn": "sklearn", "naive": "naive-cpu"}


class CPULloyd:
    params: ClassVar[list] = [list(IMPLS), [8, 64]]
    param_names: ClassVar[list] = ["impl", "k"]
    timeout = 600
    number = 1
    repeat = (1, 5, 30.0)
    warmup_time = 0.0

    def setup(self, impl, k):
        impl = IMPLS[impl]
        common.check_impl(impl)
        X = common.photo_pixels(1024)
        centers = common.initial_centers(X, k)
        self.X = common.to_device(X, impl)
        self.fit = common.fixed_iteration_fit(impl, k, centers, N_ITER)
        common.fixed_iteration_fit(impl, k, centers, 1)(self.X)  # warm-up
        self.impl = impl

    def time_fit(self, impl, k):
        common.check_iterations(self.impl, self.fit(self.X), N_ITER)
