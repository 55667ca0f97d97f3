"""The base estimator (scikit-learn's protocol from the ``__init__`` signature) and the one resolution of fit
parameters that every entry point calls, so that all of them accept and reject the same values."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

from .._validation import check_param, check_params
from ..backends import get_backend


def fit_params(params: dict[str, Any], n_samples: int | None) -> dict[str, Any]:
    """The parameters of a fit, checked (:data:`pixelkm._validation.PARAMETERS`) and resolved against the data:
    ``n_init="auto"`` (1 for k-means++, k-means|| or an array, else ``auto_n_init``), one run from an explicit
    init, ``n_clusters <= n_samples`` (when known), and a backend name the registry knows."""
    p = check_params(params)
    if n_samples is not None and "n_clusters" in p and p["n_clusters"] > n_samples:
        raise ValueError(f"n_clusters={p['n_clusters']} must be <= n_samples={n_samples}")
    init = p.get("init", "k-means++")
    if "n_init" in p:
        if p["n_init"] == "auto":
            p["n_init"] = 1 if (not isinstance(init, str) or init in ("k-means++", "k-means||")) else 10
        if not isinstance(init, str):
            if p["n_init"] != 1:  # as scikit-learn says it
                warnings.warn(
                    f"Explicit initial center position passed: performing only one init instead of "
                    f"n_init={p['n_init']} (restarts from the same centers give the same result)",
                    RuntimeWarning,
                    stacklevel=3,
                )
            p["n_init"] = 1
    if p.get("backend", "auto") != "auto":
        get_backend(p["backend"])
    return p


class BaseEstimator:
    """scikit-learn's estimator protocol: the parameters are the keyword arguments of ``__init__``, stored as
    given; they are checked when a fit starts (:func:`fit_params`), so that ``set_params`` and ``clone`` work."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> BaseEstimator:
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}; valid: {valid}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = []
        for k, v in self.get_params().items():
            d = defaults[k]
            if type(v) is not type(d) or (not hasattr(v, "shape") and v != d):
                changed.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def _device(self) -> Any:
        """The ``device`` parameter, checked (a ValueError naming it and what is available)."""
        return check_param("device", self.device)
