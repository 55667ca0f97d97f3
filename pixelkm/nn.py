"""K-means as a ``torch.nn.Module``, for training code.

``pixelkm.nn.KMeans`` keeps its centers in a buffer: they are in ``state_dict()``, move with ``.to()``, and a
fresh ``KMeans(n_clusters)`` learns the number of features from the state it loads. ``forward`` (and ``predict``)
is plain PyTorch with no host synchronization and no data-dependent Python branch, so it runs under
``torch.compile(fullgraph=True)`` and its distances are differentiable with respect to the input.
"""

from __future__ import annotations

from typing import Any

import torch

from ._validation import (
    as_tensor,
    check_data,
    check_sample_weight,
    compute_dtype,
    not_fitted_error,
    resolve_generator,
)
from .engine.batched import fit_batched
from .estimators.base import fit_params
from .ops.distance import nearest, unit_rows

#: elements of one (rows, k) distance block in eager mode (64 MiB of float32)
_BLOCK_ELEMENTS = 1 << 24

__all__ = ["KMeans", "nearest_center"]


def nearest_center(
    X: torch.Tensor, centers: torch.Tensor, *, spherical: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest center and the distance to it, for X of shape (..., d) and centers (k, d).

    Returns labels (...,) int64 and distances (...,) in the compute dtype (float64 for float64 X, float32
    otherwise): squared Euclidean distances, or cosine distances ``1 - cos`` when ``spherical``. Ties go to the
    lowest index. Differentiable with respect to X; eager mode works through X in blocks of rows, a compiled
    graph in one block.
    """
    d = centers.shape[-1]
    lead = X.shape[:-1]
    cdt = compute_dtype(X.dtype)
    x = X.reshape(-1, d).to(cdt)
    if spherical:
        x = unit_rows(x)
    c = centers.to(device=x.device, dtype=cdt)
    # one block when compiling: no Python loop over a (possibly symbolic) number of rows
    rows = None if torch.compiler.is_compiling() else max(1, _BLOCK_ELEMENTS // max(1, c.shape[0]))
    lab, dist = nearest(x.unsqueeze(0), c.unsqueeze(0), rows=rows)
    lab, dist = lab[0], dist[0]
    if spherical:
        dist = dist / 2  # |x - c|^2 = 2 - 2 cos for unit x and c
    return lab.reshape(lead), dist.reshape(lead)


class KMeans(torch.nn.Module):
    """K-means clustering as a module: ``fit(X)`` learns the centers, ``forward(X)`` assigns points to them.

    Parameters
    ----------
    n_clusters : int
        Number of clusters.
    init : {"k-means++", "random"} or tensor of shape (n_clusters, n_features), default="k-means++"
        Initialization, as in :class:`pixelkm.KMeans`; ``fit(X, init=...)`` overrides it for one call (e.g.
        ``init=km.centers`` to continue from the current centers).
    n_init : int, default=1
        Number of initializations; the one with the lowest inertia is kept.
    max_iter : int, default=300
        Maximum number of Lloyd iterations (exactly this many with ``fixed_iterations``).
    tol : float, default=1e-4
        Relative tolerance on the shift of the centers, as in :class:`pixelkm.KMeans`.
    spherical : bool, default=False
        Cosine k-means: unit rows, unit centers, cosine distances ``1 - cos``.
    fixed_iterations : bool, default=False
        Run exactly ``max_iter`` Lloyd steps with no host synchronization inside the loop (each problem still
        stops moving once converged, so the result equals the default loop's), and skip the checks that read
        the data's values (finite values, non-negative weights). ``inertia_`` and ``n_iter_`` stay tensors on
        the device. For code that must not wait for the GPU, and for CUDA graphs (with an explicit ``init``).
    random_state : None, int or torch.Generator
        Seed of the initialization; an int gives the same centers at every ``fit``.
    backend : str, default="auto"
        Implementation of the assign-and-update pass used by ``fit``.

    Attributes
    ----------
    centers : buffer of shape (n_clusters, n_features)
        Of shape (n_clusters, 0) until fitted or loaded.
    labels_ : tensor of shape (n_samples,), inertia_ : 0-d float64 tensor, n_iter_ : 0-d int64 tensor
        Set by ``fit``.
    """

    centers: torch.Tensor

    def __init__(
        self,
        n_clusters: int,
        *,
        init: Any = "k-means++",
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        spherical: bool = False,
        fixed_iterations: bool = False,
        random_state: Any = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        fit_params(
            self._params(n_clusters, init, n_init, max_iter, tol, spherical, fixed_iterations, random_state, backend),
            None,
        )
        self.n_clusters = int(n_clusters)
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.spherical = bool(spherical)
        self.fixed_iterations = bool(fixed_iterations)
        self.random_state = random_state
        self.backend = backend
        self.register_buffer("centers", torch.empty(self.n_clusters, 0))

    @staticmethod
    def _params(n_clusters, init, n_init, max_iter, tol, spherical, fixed_iterations, random_state, backend) -> dict:
        return {
            "n_clusters": n_clusters,
            "init": init,
            "n_init": n_init,
            "max_iter": max_iter,
            "tol": tol,
            "spherical": spherical,
            "fixed_iterations": fixed_iterations,
            "random_state": random_state,
            "backend": backend,
        }

    @property
    def n_features_in_(self) -> int:
        return self.centers.shape[1]

    def extra_repr(self) -> str:
        extra = ", spherical=True" if self.spherical else ""
        return f"n_clusters={self.n_clusters}, n_features={self.n_features_in_}{extra}"

    # -- fitting ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, X: torch.Tensor, sample_weight: torch.Tensor | None = None, *, init: Any = None) -> KMeans:
        """Learn the centers from X of shape (n_samples, n_features), on X's device; returns self.

        The centers buffer is overwritten in place when its shape, dtype and device already fit (so that
        captured graphs and optimizers holding it stay valid), and replaced otherwise.
        """
        Xt, _ = as_tensor(X, "X")
        check_data(Xt, "X", ndims=(2,), finite=not self.fixed_iterations)
        p = fit_params(
            self._params(
                self.n_clusters,
                self.init if init is None else init,
                self.n_init,
                self.max_iter,
                self.tol,
                self.spherical,
                self.fixed_iterations,
                self.random_state,
                self.backend,
            ),
            Xt.shape[0],
        )
        p.pop("fixed_iterations")
        cdt = compute_dtype(Xt.dtype)
        if self.fixed_iterations and sample_weight is not None:  # no value checks: they would read the device
            w, _ = as_tensor(sample_weight, "sample_weight")
            if tuple(w.shape) != (Xt.shape[0],):
                raise ValueError(f"sample_weight must have shape {(Xt.shape[0],)} to match X, got {tuple(w.shape)}")
            w = w.to(device=Xt.device, dtype=cdt)
        else:
            w = check_sample_weight(sample_weight, (Xt.shape[0],), cdt, Xt.device)
        # an explicit init draws nothing, so it does not draw a seed from torch's global generator either
        random_state = p.pop("random_state")
        gen = resolve_generator(random_state) if isinstance(p["init"], str) else torch.Generator()
        res = fit_batched(
            Xt.unsqueeze(0),
            None if w is None else w.unsqueeze(0),
            generator=gen,
            sync=not self.fixed_iterations,
            **p,
        )
        self._set_centers(res.centers[0])
        self.labels_ = res.labels[0]
        self.inertia_ = res.inertia[0]
        self.n_iter_ = res.n_iter[0]
        return self

    def _set_centers(self, centers: torch.Tensor) -> None:
        old = self.centers
        if old.shape == centers.shape and old.dtype == centers.dtype and old.device == centers.device:
            old.copy_(centers)
        else:
            self.centers = centers

    # -- using the centers --------------------------------------------------------------------------------
    def forward(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels (...,) and distances (...,) to the nearest center, for X of shape (..., n_features).

        Distances are squared Euclidean, or cosine ``1 - cos`` when ``spherical``; differentiable in X (the
        centers are not: k-means is fitted, not differentiated). A NumPy array gives NumPy arrays.
        """
        if self.centers.shape[1] == 0:
            raise not_fitted_error(f"This {type(self).__name__} has no centers yet: call fit or load_state_dict")
        if not isinstance(X, torch.Tensor):  # NumPy (or array-like) in, NumPy out
            Xt, _ = as_tensor(X, "X")
            lab, dist = self(Xt.to(self.centers.device))
            return lab.cpu().numpy(), dist.detach().cpu().numpy()
        if X.shape[-1] != self.centers.shape[1]:
            raise ValueError(f"X has {X.shape[-1]} features, but the centers have {self.centers.shape[1]}")
        return nearest_center(X, self.centers, spherical=self.spherical)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Index of the nearest center for each row of X of shape (..., n_features): shape (...,), int64."""
        return self(X)[0]

    # -- state ----------------------------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"spherical": self.spherical}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if bool(state.get("spherical", False)) != self.spherical:
            raise ValueError(
                f"the state was fitted with spherical={state.get('spherical')}; build "
                f"KMeans({self.n_clusters}, spherical={state.get('spherical')}) to load it"
            )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        incoming = state_dict.get(prefix + "centers")
        if isinstance(incoming, torch.Tensor) and self.centers.shape[1] == 0:
            if incoming.ndim != 2 or incoming.shape[0] != self.n_clusters:
                error_msgs.append(
                    f"centers of shape {tuple(incoming.shape)} do not fit KMeans(n_clusters={self.n_clusters})"
                )
                return
            # an unfitted module learns the number of features (and the dtype) from the state it loads
            self.centers = torch.empty_like(incoming, device=self.centers.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
