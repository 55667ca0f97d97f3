"""Shared pieces of the asv suite and of the plain scripts in ``benchmarks/``: sizes, data, fitters.

Sizes
    The default sizes are meant to keep ``asv run --quick`` on two cores within minutes.
    ``PIXELKM_BENCH_LARGE=1`` adds the large sizes to the parameter grids (read at import: set it before ``asv run``).
    ``PIXELKM_BENCH_TINY=1`` shrinks the data that ``setup`` builds to a few thousand points whatever the
    parameters say (read at call time); the CI smoke test uses it to run every benchmark once, quickly.

Implementations
    ``"sklearn"`` is scikit-learn's ``KMeans`` (Lloyd, Cython, OpenMP), the baseline row. ``"<backend>-<device>"``
    (``"torch-cpu"``, ``"torch-cuda"``, ``"triton-cuda"``) is ``pixelkm`` with that backend, with the data already
    on that device. ``"naive-<device>"`` is a textbook torch loop (``cdist`` + ``argmin`` + ``index_add``) that
    builds the full n x k distance matrix. An implementation that this machine cannot run raises
    ``NotImplementedError``, asv's way of skipping a benchmark.

:func:`fixed_iteration_fit` runs Lloyd iterations from explicit initial centers with ``tol=0``, so the same number
of iterations is timed for everyone; :func:`check_iterations` tells whether that number was really run.
:func:`default_fit` runs each library with its own defaults instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# torch, pixelkm and scikit-learn are imported once here, so that asv's forkserver (asv.conf.json) forks every
# benchmark process with them loaded, and so that peakmem_ (the peak of the whole process) starts from the same
# baseline for every implementation.
import numpy as np
import torch

import pixelkm

try:
    import sklearn.cluster  # noqa: F401
except ImportError:  # the scikit-learn rows are then skipped (check_impl)
    pass

REPO = Path(__file__).resolve().parents[2]
#: the test photographs (Kodak suite, 768x512); PIXELKM_IMAGES overrides the folder
IMAGES = Path(os.environ.get("PIXELKM_IMAGES", REPO.parent / "shared" / "images"))
PHOTO = "kodim23.png"

LARGE = os.environ.get("PIXELKM_BENCH_LARGE", "") not in ("", "0")
#: points that setup builds at most under PIXELKM_BENCH_TINY=1
TINY_N = 2048
#: photo side under PIXELKM_BENCH_TINY=1
TINY_SIDE = 48

IMPLEMENTATIONS = ["sklearn", "torch-cpu", "torch-cuda", "triton-cuda"]


def tiny() -> bool:
    return os.environ.get("PIXELKM_BENCH_TINY", "") not in ("", "0")


def grid(default: list, large: list) -> list:
    """A parameter list: ``default``, plus ``large`` when PIXELKM_BENCH_LARGE is set."""
    return list(default) + (list(large) if LARGE else [])


def points(n: int) -> int:
    """The number of points that setup really builds for a parameter ``n``."""
    return min(n, TINY_N) if tiny() else n


# -- data -------------------------------------------------------------------------------------------------------


def uniform(n: int, d: int, dtype: str = "float32", seed: int = 0) -> np.ndarray:
    """Points uniform in the unit cube, shape (n, d). Without cluster structure Lloyd needs many iterations to
    settle, so a fixed-iteration fit really runs all of its iterations."""
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype=np.float64 if dtype == "float64" else np.float32)


def photo(size: int | str | None = 1024, name: str = PHOTO) -> np.ndarray:
    """A test photograph as (H, W, 3) uint8, resized (bicubic) to ``size`` x ``size``, or to ``"WxH"``;
    ``None`` or ``"native"`` keeps its own size (768x512 for the Kodak photographs)."""
    from PIL import Image

    path = IMAGES / name
    if not path.exists():
        raise FileNotFoundError(f"test photograph {path} is missing: set PIXELKM_IMAGES to the folder of kodim*.png")
    with Image.open(path) as im:
        im = im.convert("RGB")
        if tiny():
            size = TINY_SIDE
        if isinstance(size, str) and size != "native":
            size = tuple(int(v) for v in size.split("x"))
        elif isinstance(size, int):
            size = (size, size)
        if isinstance(size, tuple) and size != im.size:
            im = im.resize(size, Image.Resampling.BICUBIC)
        return np.asarray(im).copy()


def photo_pixels(size: int | str | None = 1024, dtype: str = "float32", name: str = PHOTO) -> np.ndarray:
    """The pixels of :func:`photo` as an (H*W, 3) array of ``dtype`` (values 0..255)."""
    return np.ascontiguousarray(photo(size, name).reshape(-1, 3).astype(dtype))


def initial_centers(X: np.ndarray, k: int, seed: int = 0, sample: int = 1 << 16) -> np.ndarray:
    """Explicit initial centers shared by every implementation: scikit-learn's k-means++ on a random subsample.

    The subsample keeps this cheap (k-means++ on all of a 1024x1024 photo costs seconds at k = 64) and is
    drawn with ``seed``, so every implementation starts from the very same centers.
    """
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.default_rng(seed)
    Xs = X if len(X) <= sample else X[np.sort(rng.choice(len(X), sample, replace=False))]
    centers, _ = kmeans_plusplus(np.asarray(Xs, dtype=np.float64), k, random_state=seed)
    return centers.astype(X.dtype if X.dtype in (np.float32, np.float64) else np.float32)


# -- implementations --------------------------------------------------------------------------------------------


def split_impl(impl: str) -> tuple[str, str]:
    """``"torch-cuda"`` -> ``("torch", "cuda")``; ``"sklearn"`` -> ``("sklearn", "cpu")``."""
    name, _, device = impl.partition("-")
    return name, device or "cpu"


def check_impl(impl: str) -> None:
    """Raise NotImplementedError (asv's skip) when this machine cannot run ``impl``."""
    name, device = split_impl(impl)
    if name == "sklearn":
        try:
            import sklearn.cluster  # noqa: F401
        except ImportError as exc:
            raise NotImplementedError(f"scikit-learn is not installed: {exc}") from None
        return

    if device == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise NotImplementedError("no MPS device")
    if name == "naive":
        return
    if name not in pixelkm.available_backends():
        raise NotImplementedError(f"pixelkm has no backend {name!r} here: {pixelkm.available_backends()}")


def sync(impl: str) -> None:
    """Wait for the device of ``impl`` to finish its queued work (a no-op on the CPU)."""
    _, device = split_impl(impl)
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    elif device == "mps":
        import torch

        torch.mps.synchronize()


def to_device(X: np.ndarray, impl: str):
    """``X`` as the implementation takes it: NumPy for scikit-learn and pixelkm on the CPU, else a device tensor."""
    name, device = split_impl(impl)
    if name == "sklearn" or (device == "cpu" and name != "naive"):
        return X
    import torch

    return torch.from_numpy(np.ascontiguousarray(X)).to(device)


@dataclass
class FitResult:
    inertia: float
    n_iter: int


def naive_lloyd(X, centers, n_iter: int) -> FitResult:
    """Textbook torch Lloyd: full ``cdist`` matrix, ``argmin``, ``index_add_``; ``n_iter`` steps and a final pass.

    It keeps empty clusters where they are (no relocation), so it is a lower bound on the work of a real fit.
    """
    import torch

    C = torch.as_tensor(centers, device=X.device, dtype=X.dtype).clone()
    k, d = C.shape
    for _ in range(n_iter):
        labels = torch.cdist(X, C).argmin(1)
        sums = torch.zeros(k, d, dtype=X.dtype, device=X.device).index_add_(0, labels, X)
        counts = torch.bincount(labels, minlength=k).to(X.dtype).unsqueeze(1)
        C = torch.where(counts > 0, sums / counts.clamp_min(1), C)
    dist = torch.cdist(X, C).min(1).values
    return FitResult(float(dist.double().square().sum()), n_iter)


def fixed_iteration_fit(impl: str, k: int, centers: np.ndarray, n_iter: int) -> Callable[[object], FitResult]:
    """A function ``fit(X) -> FitResult`` running exactly ``n_iter`` Lloyd iterations from ``centers``.

    ``X`` must come from :func:`to_device`. ``tol=0`` leaves only the "labels stopped changing" stop, which
    :func:`check_iterations` detects. Every implementation ends with one labelling pass against the final centers
    (scikit-learn and pixelkm do it inside ``fit``), so a fit is n_iter + 1 passes over the data plus setup.
    """
    name, device = split_impl(impl)
    if name == "sklearn":
        from sklearn.cluster import KMeans

        def fit(X):
            km = KMeans(k, init=centers, n_init=1, max_iter=n_iter, tol=0.0, algorithm="lloyd").fit(X)
            return FitResult(float(km.inertia_), int(km.n_iter_))

        return fit
    if name == "naive":

        def fit(X):
            res = naive_lloyd(X, centers, n_iter)
            sync(impl)
            return res

        return fit

    import pixelkm

    def fit(X):
        km = pixelkm.KMeans(k, init=centers, n_init=1, max_iter=n_iter, tol=0.0, backend=name, device=device).fit(X)
        sync(impl)
        return FitResult(float(km.inertia_), int(km.n_iter_))

    return fit


def default_fit(impl: str, k: int, seed: int = 0) -> Callable[[object], FitResult]:
    """A function ``fit(X) -> FitResult`` with each library's own k-means++ (seeded) and its default ``tol``."""
    name, device = split_impl(impl)
    if name == "sklearn":
        from sklearn.cluster import KMeans

        def fit(X):
            km = KMeans(k, n_init=1, random_state=seed, algorithm="lloyd").fit(X)
            return FitResult(float(km.inertia_), int(km.n_iter_))

        return fit
    if name == "naive":
        raise NotImplementedError("the naive loop has no k-means++")
    import pixelkm

    def fit(X):
        km = pixelkm.KMeans(k, n_init=1, random_state=seed, backend=name, device=device).fit(X)
        sync(impl)
        return FitResult(float(km.inertia_), int(km.n_iter_))

    return fit


def check_iterations(impl: str, result: FitResult, n_iter: int) -> None:
    """Raise when a fixed-iteration fit stopped early (its labels stopped changing): its time would be wrong."""
    if result.n_iter != n_iter:
        raise RuntimeError(f"{impl} ran {result.n_iter} Lloyd iterations instead of {n_iter}: it converged early")


def interleaved_times(
    runs: dict[str, Callable[[], object]], repeat: int, budget_s: float
) -> dict[str, tuple[list[float], object]]:
    """Time each of ``runs`` up to ``repeat`` times, round-robin, so that a burst of load from other processes
    hits every implementation alike; stops after the round in which ``budget_s`` is spent (every run gets at
    least one). Returns ``{name: (seconds of each run, result of the last run)}``; report the minimum, the figure
    least disturbed by other load."""
    out: dict[str, tuple[list[float], object]] = {name: ([], None) for name in runs}
    start = time.perf_counter()
    for _ in range(max(1, repeat)):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            result = fn()
            out[name] = (out[name][0] + [time.perf_counter() - t0], result)
        if time.perf_counter() - start > budget_s:
            break
    return out
