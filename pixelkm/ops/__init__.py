"""The fused pass ``assign_update`` (validate, dispatch, out-of-memory retry, one result type: ``assign.py``) and
the one squared-distance primitive (``distance.py``)."""

from .assign import assign_update, prepare_batched, run_assign_update

__all__ = ["assign_update", "prepare_batched", "run_assign_update"]
