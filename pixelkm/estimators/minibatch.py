"""``MiniBatchKMeans``: scikit-learn's mini-batch k-means (Sculley 2010), on ``assign_update``, with partial_fit.

The semantics are scikit-learn's (``sklearn.cluster.MiniBatchKMeans``, 1.9): per-center learning rates from
accumulated weights, random reassignment of low-weight centers, early stopping on the smoothed batch inertia or
on the center shift, ``n_init`` inits compared on a validation subset, and one step per ``partial_fit`` call.
Each step is one fused assign-and-update pass over the batch on the chosen device.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._validation import (
    as_tensor,
    check_data,
    check_sample_weight,
    compute_dtype,
    resolve_generator,
    to_output,
    warn_fewer_clusters,
)
from ..engine.init_scalable import resolve_init
from ..ops import run_assign_update
from .base import fit_params
from .kmeans import KMeans


class MiniBatchKMeans(KMeans):
    """Mini-batch k-means with scikit-learn's interface and semantics, on CPU or GPU.

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"k-means++", "k-means||", "random"} or array-like of shape (n_clusters, n_features)
        Run on ``init_size`` random samples.
    max_iter : int, default=100
        Passes over the data (in expectation: ``max_iter * n_samples // batch_size`` steps).
    batch_size : int, default=1024
    verbose : int, default=0
    compute_labels : bool, default=True
        Compute ``labels_`` and ``inertia_`` over the whole data after ``fit`` (and over the batch in partial_fit).
    random_state : None, int, numpy RandomState/Generator or torch.Generator
    tol : float, default=0.0
        Stop when the squared center shift of a step is at most ``tol`` times the mean feature variance.
    max_no_improvement : int or None, default=10
        Stop after this many steps without improvement of the smoothed batch inertia.
    init_size : int, optional
        Samples used by the initialization (default ``3 * batch_size``).
    n_init : int or "auto", default="auto"
        Initializations compared on a validation subset ("auto": 1 for k-means++ or an array, else 3).
    reassignment_ratio : float, default=0.01
        Centers whose accumulated weight is below this fraction of the largest are moved to random batch samples.
    backend, device :
        As in :class:`pixelkm.KMeans`.
    """

    spherical = False  # KMeans' predict/transform/score read it

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        max_iter: int = 100,
        batch_size: int = 1024,
        verbose: int = 0,
        compute_labels: bool = True,
        random_state: Any = None,
        tol: float = 0.0,
        max_no_improvement: int | None = 10,
        init_size: int | None = None,
        n_init: int | str = "auto",
        reassignment_ratio: float = 0.01,
        backend: str = "auto",
        device: str | torch.device | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.verbose = verbose
        self.compute_labels = compute_labels
        self.random_state = random_state
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio
        self.backend = backend
        self.device = device

    # -- parameters -------------------------------------------------------------------------------------
    def _setup(self, X: torch.Tensor) -> None:
        """scikit-learn's _check_params_vs_input: resolved batch/init sizes, n_init, absolute tol."""
        n = X.shape[0]
        params = self.get_params()
        n_init = params.pop("n_init")
        p = fit_params(params, None)  # the table's checks; n_init "auto" is resolved as scikit-learn's mini-batch
        k = p["n_clusters"]
        if n < k:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
        self._batch_size = min(p["batch_size"], n)
        init_size = p["init_size"]
        if init_size is None:
            init_size = 3 * self._batch_size
        if init_size < k:
            init_size = 3 * k
        self._init_size = min(init_size, n)
        n_init = fit_params({"n_init": n_init}, None)["n_init"]
        if n_init == "auto":
            n_init = 3 if isinstance(p["init"], str) and p["init"] == "random" else 1
        self._n_init = 1 if not isinstance(p["init"], str) else n_init
        self._max_iter, self._max_no_improvement, self._verbose = p["max_iter"], p["max_no_improvement"], p["verbose"]
        tol = p["tol"]
        var = X.double().var(0, unbiased=False).mean() if tol > 0 else torch.zeros((), dtype=torch.float64)
        self._tol = float(var) * tol
        self._gen = resolve_generator(p["random_state"])
        self._n_since_last_reassign = 0

    def _init_centers(self, X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        cdt = compute_dtype(X.dtype)
        k = self.n_clusters
        idx = None
        if self._init_size < X.shape[0]:
            idx = torch.randint(0, X.shape[0], (self._init_size,), generator=self._gen).to(X.device)
        Xi, wi = (X, w) if idx is None else (X[idx], w[idx])
        return resolve_init(self.init, Xi, wi, k, self._gen, cdt).to(X.device)

    # -- the step -----------------------------------------------------------------------------------------
    def _random_reassign(self) -> bool:
        self._n_since_last_reassign += self._batch_size
        if bool((self._counts == 0).any()) or self._n_since_last_reassign >= 10 * self.n_clusters:
            self._n_since_last_reassign = 0
            return True
        return False

    def _step(self, X: torch.Tensor, w: torch.Tensor, centers: torch.Tensor, random_reassign: bool) -> tuple:
        """One mini-batch step (scikit-learn's _mini_batch_step): returns (new centers, batch inertia)."""
        res = run_assign_update(X.unsqueeze(0), centers.unsqueeze(0), w.unsqueeze(0), backend=self.backend)
        inertia = float(res.inertia(w.unsqueeze(0))[0])
        sums, cnt = res.sums[0].double(), res.counts[0].double()
        W = self._counts
        upd = cnt > 0
        new_w = W + cnt
        new = torch.where(
            upd.unsqueeze(1),
            (centers.double() * W.unsqueeze(1) + sums) / new_w.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(1),
            centers.double(),
        )
        self._counts = new_w
        new = new.to(centers.dtype)
        if random_reassign and self.reassignment_ratio > 0:
            W = self._counts
            to_reassign = W < self.reassignment_ratio * W.max()
            half = int(0.5 * X.shape[0])
            if int(to_reassign.sum()) > 0.5 * X.shape[0]:
                keep = torch.argsort(W, stable=True)[half:]
                to_reassign[keep] = False
            n_re = int(to_reassign.sum())
            if n_re:
                pick = torch.randperm(X.shape[0], generator=self._gen)[:n_re].to(X.device)
                new[to_reassign] = X[pick].to(new.dtype)
                if self.verbose:
                    print(f"[MiniBatchKMeans] Reassigning {n_re} cluster centers.")
            if bool((~to_reassign).any()):
                W[to_reassign] = W[~to_reassign].min()
        return new, inertia

    def _converged(self, step: int, n_steps: int, n: int, shift: float, batch_inertia: float) -> bool:
        """scikit-learn's _mini_batch_convergence: center shift or no improvement of the smoothed inertia."""
        batch_inertia /= self._batch_size
        step += 1
        if step == 1:
            return False
        if self._ewa_inertia is None:
            self._ewa_inertia = batch_inertia
        else:
            alpha = min(self._batch_size * 2.0 / (n + 1), 1.0)
            self._ewa_inertia = self._ewa_inertia * (1 - alpha) + batch_inertia * alpha
        if self.verbose:
            print(
                f"Minibatch step {step}/{n_steps}: mean batch inertia: {batch_inertia}, "
                f"ewa inertia: {self._ewa_inertia}"
            )
        if self._tol > 0.0 and shift <= self._tol:
            return True
        if self._ewa_inertia_min is None or self._ewa_inertia < self._ewa_inertia_min:
            self._no_improvement = 0
            self._ewa_inertia_min = self._ewa_inertia
        else:
            self._no_improvement += 1
        return self._max_no_improvement is not None and self._no_improvement >= self._max_no_improvement

    def _finish(self, X: torch.Tensor, w: torch.Tensor, centers: torch.Tensor, was_tensor: bool) -> None:
        self._centers = centers
        self._as_tensor = was_tensor
        self.cluster_centers_ = to_output(centers, was_tensor)
        self.n_features_in_ = int(X.shape[1])
        if self.compute_labels:
            res = run_assign_update(X.unsqueeze(0), centers.unsqueeze(0), w.unsqueeze(0), backend=self.backend)
            self.labels_ = to_output(res.labels[0], was_tensor)
            self.inertia_ = float(res.inertia(w.unsqueeze(0))[0])
            warn_fewer_clusters(res.counts > 0, self.n_clusters, stacklevel=4)

    def _prepare(self, X: Any, sample_weight: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
        Xt, was_tensor = as_tensor(X, "X", self._device())
        check_data(Xt, "X", ndims=(2,))
        cdt = compute_dtype(Xt.dtype)
        w = check_sample_weight(sample_weight, (Xt.shape[0],), cdt, Xt.device)
        return Xt, (torch.ones(Xt.shape[0], dtype=cdt, device=Xt.device) if w is None else w), was_tensor

    # -- public ---------------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MiniBatchKMeans:
        """Compute the centers of X of shape (n_samples, n_features) by mini-batches; returns self."""
        Xt, w, was_tensor = self._prepare(X, sample_weight)
        self._set_feature_names(X)
        self._setup(Xt)
        n = Xt.shape[0]
        max_iter = self._max_iter
        valid = torch.randint(0, n, (self._init_size,), generator=self._gen).to(Xt.device)
        best, best_inertia = None, None
        for i in range(self._n_init):
            centers = self._init_centers(Xt, w)
            res = run_assign_update(
                Xt[valid].unsqueeze(0), centers.unsqueeze(0), w[valid].unsqueeze(0), backend=self.backend
            )
            inertia = float(res.inertia(w[valid].unsqueeze(0))[0])
            if self.verbose:
                print(f"Inertia for init {i + 1}/{self._n_init}: {inertia}")
            if best_inertia is None or inertia < best_inertia:
                best, best_inertia = centers, inertia
        centers = best
        self._counts = torch.zeros(self.n_clusters, dtype=torch.float64, device=Xt.device)
        self._ewa_inertia = self._ewa_inertia_min = None
        self._no_improvement = 0
        n_steps = (max_iter * n) // self._batch_size
        # batches drawn with replacement, with probability proportional to the weights (as scikit-learn does)
        cum = None if bool((w == w[0]).all()) else torch.cumsum(w.double(), 0).cpu()
        unit = torch.ones(self._batch_size, dtype=w.dtype, device=Xt.device)
        i = -1
        for i in range(n_steps):
            if cum is None:
                idx = torch.randint(0, n, (self._batch_size,), generator=self._gen)
            else:
                u = torch.rand(self._batch_size, generator=self._gen, dtype=torch.float64) * cum[-1]
                idx = torch.searchsorted(cum, u, right=True).clamp_(max=n - 1)
            idx = idx.to(Xt.device)
            new, batch_inertia = self._step(Xt[idx], unit, centers, self._random_reassign())
            shift = float((new - centers).double().square().sum()) if self._tol > 0 else 0.0
            centers = new
            if self._converged(i, n_steps, n, shift, batch_inertia):
                break
        self.n_steps_ = i + 1
        self.n_iter_ = math.ceil((i + 1) * self._batch_size / n)
        self._finish(Xt, w, centers, was_tensor)
        if not self.compute_labels:
            self.inertia_ = (self._ewa_inertia or 0.0) * float(w.sum())
        return self

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MiniBatchKMeans:
        """Update the centers with one mini-batch step on X (the first call also initializes them)."""
        Xt, w, was_tensor = self._prepare(X, sample_weight)
        if not hasattr(self, "_centers"):
            self._set_feature_names(X)
            self._setup(Xt)
            self._centers = self._init_centers(Xt, w)
            self._counts = torch.zeros(self.n_clusters, dtype=torch.float64, device=Xt.device)
            self.n_steps_ = 0
        elif Xt.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {Xt.shape[1]} features, but MiniBatchKMeans is expecting "
                f"{self.n_features_in_} features as input"
            )
        else:
            self._check_feature_names(X)
        centers = self._centers.to(device=Xt.device, dtype=compute_dtype(Xt.dtype))
        centers, _ = self._step(Xt, w, centers, self._random_reassign())
        self.n_steps_ += 1
        self._finish(Xt, w, centers, was_tensor)
        return self


__all__ = ["MiniBatchKMeans"]
