"""The fused pass and its helpers: ``assign_update`` (validate, dispatch, out-of-memory retry, one result type)."""

from .assign import assign_update, prepare_batched, run_assign_update

__all__ = ["assign_update", "prepare_batched", "run_assign_update"]
