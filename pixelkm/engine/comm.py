"""Communicators: what the Lloyd loop needs from the processes that share a fit.

:data:`LOCAL` is the no-op of a single process; :class:`DistComm` sums over a ``torch.distributed`` process group
(each rank holds a shard of the rows). Collectives only: no host synchronization, but in the checks that every
rank agrees on before a fit (:meth:`DistComm.agree`, :meth:`DistComm.agree_data`). ``torch.distributed`` is
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
        # where this group's collectives run whatever the data's device: CUDA for NCCL, else the host
        nccl = dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        self._checking: str | None = None

    def sum_(self, t: torch.Tensor) -> None:
        self._check()
        self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM, group=self.group)

    def all(self, flags: torch.Tensor) -> torch.Tensor:
        self._check()
        t = flags.to(torch.int32)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MIN, group=self.group)
        return t.bool()

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        self._check()
        return self._gather(t)

    def broadcast_(self, t: torch.Tensor) -> None:
        self._check()
        self.dist.broadcast(t, src=self.src, group=self.group)

    def all_gather_text(self, text: str) -> list[str]:
        """``text`` of every process, in rank order (host synchronizations: for checks, not for the loop)."""
        self._check()
        return self._gather_text(text)

    def agree(self, error: Exception | None, what: str) -> None:
        """Raise on every rank when a check failed on any rank (instead of leaving the others in a collective).

        A rank that failed raises its own error; the others raise a ValueError that names the failed ranks and
        their errors."""
        failed = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=self.device)
        self.dist.all_reduce(failed, op=self.dist.ReduceOp.MAX, group=self.group)
        if not int(failed.item()):
            return
        self._checking = None  # the fit ends on every rank
        found = self._gather_text("" if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        which = "; ".join(f"rank {r}: {e}" for r, e in enumerate(found) if e)
        raise ValueError(f"{what}: the input check failed on another rank ({which})")

    def agree_data(self, what: str, n_rows: int | None, n_features: int, dtype: Any) -> list[int | None]:
        """The rows of every rank (None where a rank's source has not counted them), once every rank holds data of
        the same number of features and dtype and none holds zero rows; otherwise the same ValueError on every
        rank."""
        dtype = str(dtype).removeprefix("torch.")
        facts = [t.split(" ") for t in self.all_gather_text(f"{-1 if n_rows is None else n_rows} {n_features} {dtype}")]
        rows = [None if int(f[0]) < 0 else int(f[0]) for f in facts]

        def each(values: list) -> str:
            return ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))

        if len({f[1] for f in facts}) != 1:
            raise ValueError(
                f"{what}: every rank must hold the same number of features; got {each([f[1] for f in facts])}"
            )
        if len({f[2] for f in facts}) != 1:
            raise ValueError(f"{what}: every rank must hold data of the same dtype; got {each([f[2] for f in facts])}")
        if 0 in rows:
            raise ValueError(f"{what}: every rank must hold at least one row; got {each(rows)} rows")
        return rows

    def check_collectives(self, what: str) -> None:
        """From now on, every collective first :meth:`agree` s (one 4-byte all-reduce and host synchronization): a
        rank whose work fails between two collectives calls :meth:`failed` instead of the next one, and every rank
        raises instead of waiting in it (for a fit that reads its data in passes, where any pass may fail)."""
        self._checking = what

    def failed(self, error: Exception) -> None:
        """Tell the other ranks of ``error`` (then raise it) while :meth:`check_collectives` is on."""
        if self._checking is not None:
            self.agree(error, self._checking)

    def _check(self) -> None:
        if self._checking is not None:
            self.agree(None, self._checking)

    def _gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        out = [torch.empty_like(t) for _ in range(self.world)]
        self.dist.all_gather(out, t.contiguous(), group=self.group)
        return out

    def _gather_text(self, text: str) -> list[str]:
        data = torch.tensor(list(text.encode()), dtype=torch.uint8)
        sizes = [int(n) for n in self._gather(torch.tensor([data.numel()], device=self.device))]
        buf = torch.zeros(max(1, *sizes), dtype=torch.uint8, device=self.device)
        buf[: data.numel()] = data.to(self.device)
        return [bytes(b[:n].cpu().tolist()).decode(errors="replace") for b, n in zip(self._gather(buf), sizes)]
