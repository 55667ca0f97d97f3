"""The fused pass ``pixelkm.assign_update`` on pixel data (d = 3) in the dtypes images come in.

One call is one Lloyd step's worth of reading: labels, squared distances, per-cluster sums and counts. The
large grid adds n = 16M at k = 256, the size at which issue 2 asks for the peak extra host memory to stay under
1 GiB beyond the input (``benchmarks/cpu_lloyd.py --memory`` measures that growth alone; ``peakmem_`` here is the
whole process, input included).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from . import common

PIXELKM_IMPLS = [i for i in common.IMPLEMENTATIONS if i != "sklearn"]


class _Case:
    """Setup shared by the classes below: uint8 pixels (or a float32 copy), centers, one warm-up call."""

    params: ClassVar[list] = [
        PIXELKM_IMPLS,
        common.grid([1 << 16, 1 << 20], [1 << 24]),
        common.grid([8, 64], [256]),
        ["uint8", "float32"],
    ]
    param_names: ClassVar[list] = ["impl", "n", "k", "dtype"]
    timeout = 900
    repeat = (1, 10, 20.0)
    warmup_time = 0.0

    def setup(self, impl, n, k, dtype):
        common.check_impl(impl)
        import torch

        import pixelkm

        self.backend, device = common.split_impl(impl)
        n = common.points(n)
        rng = np.random.default_rng(0)
        X = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)  # pixels: uint8 read as they are
        self.X = torch.from_numpy(X if dtype == "uint8" else X.astype(dtype)).to(device)
        self.C = torch.from_numpy(rng.uniform(0, 255, size=(k, 3)).astype(np.float32)).to(device)
        self.assign_update = pixelkm.assign_update
        self.call()  # warm-up (and, on a GPU, kernel compilation)

    def call(self):
        res = self.assign_update(self.X, self.C, backend=self.backend)
        common.sync(self.backend + "-" + str(self.X.device.type))
        return res


class AssignUpdate(_Case):
    def time_assign_update(self, impl, n, k, dtype):
        self.call()

    def peakmem_assign_update(self, impl, n, k, dtype):
        self.call()


class AssignUpdateGPU(_Case):
    params: ClassVar[list] = [[i for i in PIXELKM_IMPLS if i.endswith("-cuda")], *_Case.params[1:]]

    def track_gpu_peak_mib(self, impl, n, k, dtype):
        """Peak device memory of one call beyond its inputs, in MiB."""
        import torch

        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        self.call()
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    track_gpu_peak_mib.unit = "MiB"
