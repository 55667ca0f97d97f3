"""Communicators: what the Lloyd loop needs from the processes that share a fit.

:data:`LOCAL` is the no-op of a single process; :class:`DistComm` sums over a ``torch.distributed`` process group
(each rank holds a shard of the rows). Collectives only: no host synchronization. ``torch.distributed`` is
imported only when a :class:`DistComm` is made.
"""

from __future__ import annotations

from typing import Any

import torch


class LocalComm:
    """One process: every collective is the identity."""

    is_local = True
    world = 1
    rank = 0

    def sum_(self, t: torch.Tensor) -> None:
        """Sum ``t`` in place over the processes."""

    def all(self, flags: torch.Tensor) -> torch.Tensor:
        """Per element, whether ``flags`` is True on every process."""
        return flags

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """``t`` of every process, in rank order (same shape on every process)."""
        return [t]

    def broadcast_(self, t: torch.Tensor) -> None:
        """Overwrite ``t`` with rank 0's."""


#: the communicator of a single process
LOCAL = LocalComm()


class DistComm(LocalComm):
    """The ranks of a ``torch.distributed`` process group, each with its own rows."""

    is_local = False

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.src = 0 if group is None else dist.get_global_rank(group, 0)

    def sum_(self, t: torch.Tensor) -> None:
        self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM, group=self.group)

    def all(self, flags: torch.Tensor) -> torch.Tensor:
        t = flags.to(torch.int32)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MIN, group=self.group)
        return t.bool()

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        out = [torch.empty_like(t) for _ in range(self.world)]
        self.dist.all_gather(out, t.contiguous(), group=self.group)
        return out

    def broadcast_(self, t: torch.Tensor) -> None:
        self.dist.broadcast(t, src=self.src, group=self.group)

    def agree(self, error: Exception | None, device: torch.device, what: str) -> None:
        """Raise on every rank when a check failed on any rank (instead of leaving the others in a collective)."""
        failed = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=device)
        self.dist.all_reduce(failed, op=self.dist.ReduceOp.MAX, group=self.group)
        if error is not None:
            raise error
        if int(failed.item()):
            raise RuntimeError(f"{what}: the input check failed on another rank (see its error)")
