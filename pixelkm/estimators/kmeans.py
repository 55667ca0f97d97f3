"""The ``KMeans`` estimator and the ``kmeans()`` function: parameters, restarts, and outputs.

The Lloyd loop, the restarts and the initializations are the engine's (:mod:`pixelkm.engine`). This module turns
user input into batched tensors, calls the engine, and gives results back in the input's form.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import torch

from .._validation import (
    as_tensor,
    check_data,
    check_param,
    check_sample_weight,
    compute_dtype,
    not_fitted_error,
    resolve_generator,
    to_output,
)
from ..engine.batched import fit_batched, problem_rng
from ..engine.histogram import map_rows, reduce_colors
from ..engine.subsample import capped_rows
from ..ops import run_assign_update
from ..ops.distance import sq_distances, unit_rows
from .base import BaseEstimator, fit_params


def _feature_names(X: Any) -> np.ndarray | None:
    """The column names of a DataFrame-like X when they are all strings (as scikit-learn takes them), else None."""
    cols = getattr(X, "columns", None)
    if cols is None or isinstance(X, (np.ndarray, torch.Tensor)):
        return None
    names = np.asarray(list(cols), dtype=object)
    if len(names) == 0 or not all(isinstance(c, str) for c in names):
        return None
    return names


class KMeans(BaseEstimator):
    """K-means clustering on CPU or GPU, with scikit-learn's interface.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features), default="k-means++"
        "k-means++" is greedy k-means++ with 2 + log(k) local trials per center; "random" takes k distinct
        points; an array gives the initial centers.
    n_init : int or "auto", default=1
        Number of initializations; the run with the lowest inertia is kept.
    max_iter : int, default=300
        Maximum number of Lloyd iterations per run.
    tol : float, default=1e-4
        Relative tolerance: a run stops when the squared shift of the centers (summed over clusters) is at most
        ``tol`` times the mean variance of the features, or when the labels stop changing.
    random_state : None, int, numpy RandomState/Generator or torch.Generator
        Seed of every random choice. The same seed gives the same result on the same device and backend. An int
        in [0, 2**64): torch's generator keeps 32 bits of a seed, so seeds from 2**32 up are mixed down to 32 bits
        first (every bit of them counts; seeds below 2**32 are used as they are).
    spherical : bool, default=False
        Cosine (spherical) k-means: samples are scaled to unit norm, centers are the normalized means of their
        samples, a sample goes to the center of highest cosine similarity, and the inertia is the sum of cosine
        distances ``1 - cos(x, c)``. For embeddings. Rows of zeros stay zero.
    algorithm : {"auto", "lloyd", "hamerly", "yinyang"}, default="auto"
        "lloyd" computes every distance in every pass. "hamerly" keeps per-point bounds (Hamerly, 2010) so that a
        pass recomputes distances only for the points that may have changed cluster; "yinyang" (Ding et al., 2015;
        the cpu backend only) keeps a lower bound per group of about 10 centers (8 bytes per group and sample) and
        recomputes only the groups those leave open. Both give the same iterates as "lloyd" (on the cpu backend bit
        for bit; elsewhere up to float ties). Both run one problem at a time, without ``spherical`` or ``verbose``;
        the cpu backend's Hamerly bounds take up to 14 features, beyond which the torch backend's bounds serve
        (with ``backend="auto"``; a named backend without bounds is an error). "auto" takes Yinyang on the cpu
        backend beyond 14 features from 128 clusters (from 64 at 128 features or more; d = 128, K = 1024: 4-5x
        faster than its full passes), Hamerly with the torch backend on the CPU, both from 16,384 samples, while
        the bounds fit in 1 GiB and a quarter of the free memory, and Lloyd otherwise (the fused kernels' full
        passes were measured faster than Hamerly's bounds on photos, d = 3; see
        ``pixelkm.engine.bounds.AUTO_RULE``).
    backend : str, default="auto"
        Implementation of the assign-and-update pass (see :func:`pixelkm.available_backends`).
    device : str or torch.device, optional
        Device to compute on; by default the device of the data (the CPU for NumPy input).
    verbose : bool, default=False
        Print the inertia at every iteration.
    max_points_per_cluster : int, optional
        Off by default (every sample is used). When set and there are more than ``n_clusters *
        max_points_per_cluster`` samples, the initialization and the Lloyd iterations run on that many samples drawn
        uniformly without replacement (from ``random_state``, with their weights), as faiss's
        ``max_points_per_centroid``; ``labels_`` and ``inertia_`` are then those of every sample against the centers
        found, from one more pass. Faster on huge inputs, at a cost in inertia (docs/cpu.md, "Capped fits", measures
        it); uint8 images are usually better served by their exact color histogram, which is used anyway.

    Tensors that require grad are read detached: k-means is fitted, not differentiated.

    Attributes
    ----------
    cluster_centers_ : ndarray or tensor of shape (n_clusters, n_features)
        float64 for float64 data, float32 otherwise; a tensor when ``fit`` got a tensor.
    labels_ : ndarray or tensor of shape (n_samples,), int64
    inertia_ : float
        Sum of (weighted) squared distances of the samples to their closest center.
    n_iter_ : int
        Lloyd iterations run by the best initialization.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features,), object
        The column names of a DataFrame X (all strings); then ``predict``, ``transform`` and ``score`` refuse other
        columns or another order.
    """

    _estimator_type = "clusterer"

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        n_init: int | str = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: Any = None,
        spherical: bool = False,
        algorithm: str = "auto",
        backend: str = "auto",
        device: str | torch.device | None = None,
        verbose: bool = False,
        max_points_per_cluster: int | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.spherical = spherical
        self.algorithm = algorithm
        self.backend = backend
        self.device = device
        self.verbose = verbose
        self.max_points_per_cluster = max_points_per_cluster

    # -- scikit-learn protocol ------------------------------------------------------------------------
    def __sklearn_tags__(self):  # imported lazily: scikit-learn is not a dependency
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type="clusterer",
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(preserves_dtype=["float64", "float32"]),
            input_tags=InputTags(),
        )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_centers")

    # -- feature names and output containers (pandas) ------------------------------------------------------
    def _set_feature_names(self, X: Any) -> None:
        """``feature_names_in_`` from a DataFrame's (string) column names, as scikit-learn sets it."""
        names = _feature_names(X)
        if names is None:
            self.__dict__.pop("feature_names_in_", None)
        else:
            self.feature_names_in_ = names

    def _check_feature_names(self, X: Any) -> None:
        """Refuse columns other than those of the fit (or in another order); warn when names appear or vanish."""
        fitted = getattr(self, "feature_names_in_", None)
        names = _feature_names(X)
        name = type(self).__name__
        if fitted is not None and names is not None:
            if len(fitted) != len(names) or not (fitted == names).all():
                raise ValueError(
                    "The feature names should match those that were passed during fit: fitted on "
                    f"{list(fitted)}, got {list(names)}. Feature names must be in the same order as they were in fit."
                )
        elif fitted is not None:
            warnings.warn(
                f"X does not have valid feature names, but {name} was fitted with feature names",
                UserWarning,
                stacklevel=3,
            )
        elif names is not None:
            warnings.warn(
                f"X has feature names, but {name} was fitted without feature names", UserWarning, stacklevel=3
            )

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the ``transform`` columns: ``"<class name in lower case><i>"`` for each cluster i."""
        if not hasattr(self, "_centers"):
            raise not_fitted_error(f"This {type(self).__name__} instance is not fitted yet; call 'fit' first")
        if input_features is not None:
            fitted = getattr(self, "feature_names_in_", None)
            given = np.asarray(input_features, dtype=object)
            if fitted is not None and (len(given) != len(fitted) or not (given == fitted).all()):
                raise ValueError("input_features is not equal to feature_names_in_")
            if len(given) != self.n_features_in_:
                raise ValueError(f"input_features should have length equal to {self.n_features_in_} features")
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self._centers.shape[0])], dtype=object)

    def set_output(self, *, transform: str | None = None) -> KMeans:
        """Output container of ``transform`` and ``fit_transform``: "default" (NumPy or tensors, as the input) or
        "pandas" (a DataFrame with the columns of :meth:`get_feature_names_out`); None leaves it as it is."""
        if transform is not None:
            if transform not in ("default", "pandas"):
                raise ValueError(f"set_output(transform=...) takes 'default' or 'pandas', got {transform!r}")
            self._output_transform = transform
        return self

    def _wrap_output(self, out: Any, X: Any) -> Any:
        mode = getattr(self, "_output_transform", None)
        if mode is None:  # scikit-learn's global setting, when scikit-learn is imported
            sk = sys.modules.get("sklearn")
            mode = sk.get_config().get("transform_output", "default") if sk is not None else "default"
        if mode != "pandas":
            return out
        import pandas as pd

        values = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else out
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(values, index=index, columns=self.get_feature_names_out())

    # -- fitting ----------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> KMeans:
        """Compute k-means clustering of X of shape (n_samples, n_features); returns self."""
        p = fit_params(self.get_params(), None)
        Xt, was_tensor = as_tensor(X, "X", p["device"])
        check_data(Xt, "X", ndims=(2,))
        p = fit_params(self.get_params(), Xt.shape[0])
        self._set_feature_names(X)
        w = check_sample_weight(sample_weight, (Xt.shape[0],), compute_dtype(Xt.dtype), Xt.device)
        gen = resolve_generator(p["random_state"])
        # max_points_per_cluster: the fit runs on a uniform subsample (drawn before the initialization)
        rows = capped_rows(Xt.shape[0], p["n_clusters"], p["max_points_per_cluster"], gen, w)
        Xa, wa = Xt, w
        if rows is not None:
            Xa = Xt[rows.to(Xt.device)]
            wa = None if w is None else w[rows.to(w.device)]
        # uint8 pixels: fit on the exact color histogram (same Lloyd iterates) where that pays
        red = None
        if not self.spherical:  # (no inverse index: every pixel's label comes through one table gather below)
            red = reduce_colors(Xa, wa, n_clusters=p["n_clusters"], verbose=bool(self.verbose), inverse=False)
        if red is None:
            Xf, wf, tol = Xa, wa, p["tol"]
        else:  # the absolute tolerance of the fit on every row: tol times the rows' variance (from the histogram)
            Xf, wf, tol = red.colors, red.weights, (red.variance.double() * p["tol"]).reshape(1).to(Xt.device)
        res = fit_batched(
            Xf.unsqueeze(0),
            None if wf is None else wf.unsqueeze(0),
            n_clusters=p["n_clusters"],
            init=p["init"],
            n_init=p["n_init"],
            max_iter=p["max_iter"],
            tol=tol,
            generator=gen,
            backend=p["backend"],
            spherical=p["spherical"],
            verbose=bool(p["verbose"]),
            algorithm=p["algorithm"],
        )
        centers, labels, inertia, n_iter = res.centers, res.labels, res.inertia, res.n_iter
        if rows is not None:  # every sample's label and the inertia of all of them: one more pass
            labels, total = self._assign_all(Xt, w, centers, p)
            inertia = total.reshape(1)
        elif red is not None:
            labels = labels[:, red.inverse] if red.inverse is not None else map_rows(Xt, red.colors, labels[0])[None]
        self._centers = centers[0]
        self._as_tensor = was_tensor
        self.cluster_centers_ = to_output(centers[0], was_tensor)
        self.labels_ = to_output(labels[0], was_tensor)
        self.inertia_ = float(inertia[0])
        self.n_iter_ = int(n_iter[0])
        self.n_features_in_ = int(Xt.shape[1])
        return self

    def _assign_all(self, Xt: torch.Tensor, w: torch.Tensor | None, centers: torch.Tensor, p: dict):
        """Labels (1, n) of every sample and their (weighted) inertia against ``centers`` (1, k, d): one pass."""
        cdt = compute_dtype(Xt.dtype)
        Xe = unit_rows(Xt.to(cdt)) if p["spherical"] else Xt
        ww = None if w is None else w.unsqueeze(0)
        res = run_assign_update(Xe.unsqueeze(0), centers.to(device=Xt.device, dtype=cdt), ww, backend=p["backend"])
        total = res.inertia(ww)[0]
        return res.labels, total / 2 if p["spherical"] else total

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit and return the labels of X, shape (n_samples,)."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit and return the distances of X to the centers, shape (n_samples, n_clusters)."""
        return self.fit(X, sample_weight=sample_weight).transform(X)  # (wrapped by transform)

    # -- using a fitted model ---------------------------------------------------------------------------
    def _check_fitted_input(self, X: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
        if not hasattr(self, "_centers"):
            raise not_fitted_error(
                f"This {type(self).__name__} instance is not fitted yet; call 'fit' with appropriate arguments first"
            )
        self._check_feature_names(X)
        Xt, was_tensor = as_tensor(X, "X", self._device())
        check_data(Xt, "X", ndims=(2,))
        if Xt.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {Xt.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        cdt = compute_dtype(Xt.dtype)
        if self.spherical:
            Xt = unit_rows(Xt.to(cdt))
        return Xt, self._fitted_centers(Xt.device).to(dtype=cdt), was_tensor

    def _fitted_centers(self, device: torch.device) -> torch.Tensor:
        """The centers ``predict``, ``transform`` and ``score`` use: ``cluster_centers_`` as it is now (assigned or
        edited in place since the fit, as scikit-learn allows; a pickled model too), checked. (k, d) values: read
        in place where they can be."""
        C, _ = as_tensor(self.cluster_centers_, "cluster_centers_", device)
        check_data(C, "cluster_centers_", ndims=(2,))
        if C.shape[1] != self.n_features_in_:
            raise ValueError(
                f"cluster_centers_ has {C.shape[1]} features, but {type(self).__name__} was fitted on "
                f"{self.n_features_in_}"
            )
        return C.to(device)

    def predict(self, X: Any) -> Any:
        """Index of the closest center for each sample of X, shape (n_samples,), int64."""
        Xt, C, was_tensor = self._check_fitted_input(X)
        res = run_assign_update(Xt.unsqueeze(0), C.unsqueeze(0), None, backend=self.backend)
        return to_output(res.labels[0], was_tensor)

    def transform(self, X: Any) -> Any:
        """Distances of each sample to each center, shape (n_samples, n_clusters).

        Euclidean distances; with ``spherical``, cosine distances ``1 - cos(x, c)``.
        """
        Xt, C, was_tensor = self._check_fitted_input(X)
        sq = sq_distances(Xt.unsqueeze(0), C.unsqueeze(0))[0]  # (n, k)
        return self._wrap_output(to_output(sq / 2 if self.spherical else sq.sqrt(), was_tensor), X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Opposite of the (weighted) inertia of X against the fitted centers."""
        Xt, C, _ = self._check_fitted_input(X)
        w = check_sample_weight(sample_weight, (Xt.shape[0],), C.dtype, Xt.device)
        res = run_assign_update(
            Xt.unsqueeze(0), C.unsqueeze(0), None if w is None else w.unsqueeze(0), backend=self.backend
        )
        inertia = float(res.inertia(None if w is None else w.unsqueeze(0))[0])
        return -inertia / 2 if self.spherical else -inertia


def kmeans(
    X: Any,
    n_clusters: int,
    *,
    sample_weight: Any = None,
    mask: Any = None,
    init: Any = "k-means++",
    n_init: int | str = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: Any = None,
    spherical: bool = False,
    algorithm: str = "auto",
    backend: str = "auto",
    device: str | torch.device | None = None,
    verbose: bool = False,
    max_points_per_cluster: int | None = None,
) -> tuple[Any, Any, Any]:
    """K-means clustering of X; returns ``(centers, labels, inertia)``.

    X of shape (n_samples, n_features) gives centers (k, d), labels (n,) and a float inertia. X of shape
    (batch, n_samples, n_features) solves ``batch`` independent problems together, one assign-and-update pass
    per Lloyd step for the whole batch, and gives centers (batch, k, d), labels (batch, n) and inertia (batch,).
    Parameters are those of :class:`KMeans` (``max_points_per_cluster`` for one problem only), and for a batch:

    - ``init`` may be an array of shape (batch, k, d);
    - ``mask`` of shape (batch, n_samples), bool, keeps the samples where it is True: problem i is then the fit
      of ``X[i][mask[i]]`` (padding values are ignored but must be finite); masked-out samples get label -1;
    - problem i draws its random numbers as a single fit with ``random_state=s + i`` would, for an int ``s``
      (a seed drawn from the global torch RNG when None); a list of b seeds or generators gives problem i the
      i-th; one ``torch.Generator`` is drawn problem after problem, as a loop of single fits sharing it would
      be with ``n_init=1``.
    """
    Xt, was_tensor = as_tensor(X, "X", check_param("device", device))
    check_data(Xt, "X", ndims=(2, 3))
    if Xt.ndim == 2:
        if mask is not None:
            raise ValueError(
                "mask is for batched X of shape (batch, n_samples, n_features); for one problem pass X[mask]"
            )
        if isinstance(random_state, (list, tuple)):
            raise TypeError("a list of seeds is for batched X; pass one seed")
        est = KMeans(
            n_clusters,
            init=init,
            n_init=n_init,
            max_iter=max_iter,
            tol=tol,
            random_state=random_state,
            spherical=spherical,
            algorithm=algorithm,
            backend=backend,
            device=device,
            verbose=verbose,
            max_points_per_cluster=max_points_per_cluster,
        ).fit(X, sample_weight=sample_weight)
        return est.cluster_centers_, est.labels_, est.inertia_
    if max_points_per_cluster is not None:
        raise ValueError("max_points_per_cluster is for one problem (2-D X); subsample the batch's problems yourself")
    m = check_mask(mask, Xt, n_clusters)
    n_min = Xt.shape[1] if m is None else int(m.sum(1).min())
    params = {"n_clusters": n_clusters, "init": init, "n_init": n_init, "max_iter": max_iter, "tol": tol}
    params.update(backend=backend, algorithm=algorithm, random_state=random_state, spherical=spherical)
    p = fit_params({**params, "verbose": verbose}, n_min)
    w = check_sample_weight(sample_weight, tuple(Xt.shape[:2]), compute_dtype(Xt.dtype), Xt.device)
    if w is not None and m is not None and bool(((w * m).sum(1) <= 0).any()):
        raise ValueError("sample_weight sums to zero over the masked-in samples of a problem")
    res = fit_batched(
        Xt,
        w,
        mask=m,
        spherical=p.pop("spherical"),
        generator=problem_rng(p.pop("random_state"), Xt.shape[0]),
        verbose=bool(p.pop("verbose")),
        **p,
    )
    return to_output(res.centers, was_tensor), to_output(res.labels, was_tensor), to_output(res.inertia, was_tensor)


def check_mask(mask: Any, X: torch.Tensor, n_clusters: Any) -> torch.Tensor | None:
    """Validate a (b, n) boolean mask for batched X; None stays None."""
    if mask is None:
        return None
    m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
    if m.dtype != torch.bool:
        raise TypeError(f"mask must be boolean, got {m.dtype}")
    if tuple(m.shape) != tuple(X.shape[:2]):
        raise ValueError(f"mask must have shape {tuple(X.shape[:2])} (batch, n_samples), got {tuple(m.shape)}")
    return m.to(X.device)
