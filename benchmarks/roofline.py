"""Milliseconds per Lloyd iteration beside the floor of the hardware it runs on.

    python benchmarks/roofline.py            # full sizes, on CUDA when there is a GPU
    python benchmarks/roofline.py --quick    # small sizes: a smoke check that runs on the CPU too

Per case it times, in the same run and on the same device: the Triton kernels alone (the device time of
the kernels of one pass, from the CUDA profiler), the whole Lloyd step on ``backend="triton"`` (both
reduction modes; CUDA events), the torch reference (``backend="torch"``), a naive ``torch.cdist`` +
``argmin`` + ``index_add_`` step, and ``flash_kmeans.batch_kmeans_Euclid`` where that package is importable
(same initial centers, tol=0 so that it runs the fixed number of iterations). One iteration = labels of every
point (in the narrowest dtype that holds k - 1, as a Lloyd loop needs them; no distances), per-cluster sums
and counts, new centers.

Beside the times it prints two floors: bytes moved (X read once in its own dtype, the narrow labels written)
over the measured copy bandwidth of the device, and operations (2 n k d for the distances) over the measured
arithmetic rate (a float32 GEMM for small d; for d > 8 the rate of the ``tl.dot`` precision the kernel uses:
one TF32 pass by default). ``x floor`` = time / max(floors).

On the CPU, triton runs under its interpreter (TRITON_INTERPRET=1, set here before triton is imported):
its times there say nothing about speed. GPU figures are recorded in benchmarks/GPU_NOTES.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT.parent / "shared" / "images" / "kodim23.png"
if not IMAGE.exists():  # ../shared does not travel to a device machine; the package ships this photograph
    IMAGE = ROOT / "pixelkm" / "data" / "kodim23.png"


# ----------------------------------------------------------------------------------------------- data


def photo(side: int, device: torch.device) -> torch.Tensor:
    """A (side * side, 3) uint8 RGB image: a Kodak photograph resized (bicubic), or noise if it is missing."""
    try:
        from PIL import Image

        with Image.open(IMAGE) as im:
            arr = torch.from_numpy(np.array(im.convert("RGB").resize((side, side), Image.BICUBIC)))
        return arr.reshape(-1, 3).contiguous().to(device)
    except (ImportError, OSError):
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (side * side, 3), generator=g, dtype=torch.uint8).to(device)


def xy_rgb(pixels: torch.Tensor, side: int) -> torch.Tensor:
    """(side * side, 5) float32 features: x and y scaled to 0..255, then R, G, B."""
    yy, xx = torch.meshgrid(
        torch.arange(side, device=pixels.device), torch.arange(side, device=pixels.device), indexing="ij"
    )
    pos = torch.stack([xx, yy], -1).reshape(-1, 2).float() * (255.0 / max(1, side - 1))
    return torch.cat([pos, pixels.float()], 1).contiguous()


def embeddings(n: int, d: int, k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Gaussian mixture of k components in d dimensions: (n, d) in ``dtype``."""
    g = torch.Generator(device="cpu").manual_seed(1)
    means = torch.randn(k, d, generator=g) * 2
    lab = torch.randint(0, k, (n,), generator=g)
    return (means[lab] + torch.randn(n, d, generator=g)).to(device=device, dtype=dtype)


def cases(quick: bool, device: torch.device):
    """(name, X (n, d), k, iterations) per case."""
    side = 64 if quick else 4096
    n_emb, k_emb = (4096, 64) if quick else (1 << 20, 1024)
    pixels = photo(side, device)
    yield f"image {side}x{side} uint8 RGB K=8", pixels, 8
    yield f"image {side}x{side} uint8 RGB K=64", pixels, 64
    yield f"image {side}x{side} uint8 RGB K=256", pixels, 256
    yield f"x,y,R,G,B {side}x{side} float32 K=64", xy_rgb(pixels, side), 64
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).replace("torch.", "")
        yield f"embeddings n={n_emb} d=128 {name} K={k_emb}", embeddings(n_emb, 128, k_emb, dtype, device), k_emb


# --------------------------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, iters: int, warmup: int = 2) -> float:
    """Median milliseconds of one call of ``fn`` (after ``warmup`` calls): CUDA events on a GPU, else the clock."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


KERNELS = ("_small_d_kernel", "_large_d_kernel", "_sorted_sums_kernel", "_cluster_sums_kernel")


def kernel_ms(fn, iters: int) -> float | None:
    """Device milliseconds per call of ``fn`` spent in pixelkm's Triton kernels (CUDA profiler), or None."""
    try:
        from torch.profiler import ProfilerActivity, profile

        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(iters):
                fn()
            torch.cuda.synchronize()
        total = 0.0
        for e in prof.key_averages():
            if any(name in e.key for name in KERNELS):
                total += getattr(e, "device_time_total", None) or e.cuda_time_total
        return total / iters / 1e3 if total else None
    except Exception as exc:  # the profiler needs CUPTI; report its absence instead of failing the benchmark
        print(f"(kernel-alone time unavailable: {type(exc).__name__}: {exc})")
        return None


def copy_bandwidth(device: torch.device, quick: bool) -> float:
    """Bytes per second of a device-to-device copy (read + write counted)."""
    n = (1 << 24) if quick else (1 << 28)
    src = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, 5 if quick else 20)
    return 2 * n / (ms * 1e-3)


def gemm_rate(device: torch.device, dtype: torch.dtype, tf32: bool, quick: bool) -> float:
    """Floating-point operations per second of a square GEMM (2 m n k per product)."""
    m = 512 if quick else 8192
    a = torch.randn(m, m, device=device).to(dtype)
    b = torch.randn(m, m, device=device).to(dtype)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        ms = time_ms(lambda: a @ b, device, 3 if quick else 10)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * m**3 / (ms * 1e-3)


# ------------------------------------------------------------------------------------------ iterations


def label_dtype(k: int) -> torch.dtype:
    """The narrowest integer dtype that holds k - 1."""
    return torch.uint8 if k <= 256 else torch.int16 if k <= 1 << 15 else torch.int32


def pixelkm_step(backend: str, X: torch.Tensor, C: torch.Tensor, **kw):
    """One Lloyd iteration through the backend: the fused pass (labels, no distances), then sums / counts."""
    from pixelkm.backends import get_backend

    if backend == "triton":
        kw.setdefault("label_dtype", label_dtype(C.shape[1]))
    res = get_backend(backend).assign_update(X, C, None, compute_distances=False, **kw)
    counts = res.counts.unsqueeze(-1)
    return torch.where(counts > 0, res.sums / counts.clamp_min(1e-30), C), res.labels


def naive_step(X: torch.Tensor, C: torch.Tensor):
    """The textbook step: a float copy of X, the full n x k distance matrix, argmin, index_add_."""
    x = X[0].float()
    labels = torch.cdist(x, C[0]).argmin(1)
    k, d = C.shape[1:]
    sums = torch.zeros(k, d, device=X.device).index_add_(0, labels, x)
    counts = torch.zeros(k, device=X.device).index_add_(0, labels, torch.ones_like(labels, dtype=torch.float32))
    return torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], C[0]), labels


def flash_kmeans_ms(X: torch.Tensor, C: torch.Tensor, iters: int) -> float | None:
    """ms per iteration of flash-kmeans' batch_kmeans_Euclid from the same centers, or None without it."""
    try:
        from flash_kmeans import batch_kmeans_Euclid
    except ImportError:
        return None
    if X.device.type != "cuda":
        return None  # it runs on CUDA only
    x = (X.float() if X.dtype == torch.uint8 else X).contiguous()  # float data only: uint8 images as float32
    init = C.to(x.dtype)
    k = C.shape[1]

    def run():
        batch_kmeans_Euclid(x, k, max_iters=iters, tol=0.0, init_centroids=init.clone())

    return time_ms(run, X.device, 3) / iters


def host_profile(case: str, fn, device: torch.device, steps: int = 20) -> None:
    """The host's milliseconds per step without waiting for the device (launches, Python), then a cProfile of the
    same steps, top 12 by own time: what a step costs the CPU when the GPU is not the bound."""
    import cProfile
    import pstats

    fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    host = (time.perf_counter() - t0) * 1e3 / steps
    sync()
    wall = (time.perf_counter() - t0) * 1e3 / steps
    print(f"  {case}: host {host:.3f} ms per triton step before waiting, {wall:.3f} ms with the wait")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        fn()
    sync()
    prof.disable()
    pstats.Stats(prof).strip_dirs().sort_stats("tottime").print_stats(12)


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke check; runs on the CPU too)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--iters", type=int, default=None, help="timed repetitions per row (median is reported)")
    p.add_argument("--only", default=None, help="run only cases whose name contains this text")
    p.add_argument(
        "--profile", action="store_true", help="per case, the host time of a triton step and its cProfile top 12"
    )
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first import of triton
    import pixelkm

    iters = args.iters or (1 if args.quick else 20)
    backends = pixelkm.available_backends()
    on_gpu = device.type == "cuda"

    bw = copy_bandwidth(device, args.quick)
    fp32 = gemm_rate(device, torch.float32, False, args.quick)
    tf32 = gemm_rate(device, torch.float32, True, args.quick) if on_gpu else fp32
    name = torch.cuda.get_device_name(device) if on_gpu else "CPU"
    print(
        f"device: {name}; torch {torch.__version__}; copy {bw / 1e9:.0f} GB/s; "
        f"float32 GEMM {fp32 / 1e12:.3g} TFLOP/s; TF32 GEMM {tf32 / 1e12:.3g} TFLOP/s"
    )
    if not on_gpu:
        print("(CPU: triton runs under its interpreter; its times are not speed figures)")

    print()
    print(f"{'case':<42} {'implementation':<34} {'ms/iter':>10} {'mem floor':>10} {'ops floor':>10} {'x floor':>8}")

    def row(case, label, ms, fm, fo, ratio):  # printed as it comes, so that a run cut short keeps its rows
        print(f"{case:<42} {label:<34} {ms:>10.3f} {fm:>10.4f} {fo:>10.4f} {ratio:>8.1f}", flush=True)

    for case, X2, k in cases(args.quick, device):
        if args.only and args.only not in case:
            continue
        X = X2.unsqueeze(0)
        n, d = X2.shape
        g = torch.Generator().manual_seed(0)
        C = X2[torch.randperm(n, generator=g)[:k].to(device)].float().unsqueeze(0) + 0.25
        bytes_moved = n * d * X.element_size() + n * label_dtype(k).itemsize
        ops = 2 * n * k * d
        rate = fp32 if d <= 8 else tf32
        floor_mem = bytes_moved / bw * 1e3
        floor_ops = ops / rate * 1e3
        floor = max(floor_mem, floor_ops)
        impls = []
        triton_here = "triton" in backends and (on_gpu or os.environ.get("TRITON_INTERPRET") == "1")
        if triton_here and on_gpu:
            ms = kernel_ms(lambda X=X, C=C: pixelkm_step("triton", X, C, deterministic=False), iters)
            if ms is not None:
                row(case, "triton kernels alone (fast)", ms, floor_mem, floor_ops, ms / floor)
        if triton_here:
            impls.append(("triton step (fast)", lambda X=X, C=C: pixelkm_step("triton", X, C, deterministic=False)))
            impls.append(
                ("triton step (deterministic)", lambda X=X, C=C: pixelkm_step("triton", X, C, deterministic=True))
            )
            if d > 8:  # the other tl.dot precisions of the large-d path (the default is one TF32 pass)
                for prec in ("tf32x3", "fp16"):
                    label = f"triton step (precision={prec})"
                    impls.append((label, lambda X=X, C=C, p=prec: pixelkm_step("triton", X, C, precision=p)))
        impls.append(("torch reference", lambda X=X, C=C: pixelkm_step("torch", X, C)))
        impls.append(("naive cdist+argmin+index_add_", lambda X=X, C=C: naive_step(X, C)))
        agree = None
        if impls[0][0].startswith("triton"):
            lab_x, lab_t = pixelkm_step("triton", X, C)[1][0].long(), pixelkm_step("torch", X, C)[1][0]
            agree = float((lab_x == lab_t).float().mean())
            inertia = [float(((X2.double() - C[0].double()[lab]) ** 2).sum()) for lab in (lab_x, lab_t)]
        for label, fn in impls:
            try:
                ms = time_ms(fn, device, iters, warmup=1 if args.quick else 3)
            except torch.OutOfMemoryError:
                ms = float("nan")
                torch.cuda.empty_cache()
            row(case, label, ms, floor_mem, floor_ops, ms / floor)
        if args.profile and triton_here:
            host_profile(case, lambda X=X, C=C: pixelkm_step("triton", X, C, deterministic=False), device)
        fk = flash_kmeans_ms(X, C, 10) if on_gpu else None
        if fk is not None:
            label = "flash-kmeans" + (" (float32 copy of X)" if X.dtype == torch.uint8 else "")
            row(case, label, fk, floor_mem, floor_ops, fk / floor)
        if agree is not None:
            rel = (inertia[0] - inertia[1]) / inertia[1]
            print(
                f"  {case}: triton labels equal to torch's for {100 * agree:.4f}% of points; inertia of triton's "
                f"labels {rel:+.2e} relative to torch's (float64 distances; target within 1e-4)"
            )

    return 0


if __name__ == "__main__":
    sys.exit(main())
