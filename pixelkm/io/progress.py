"""The one progress helper: tqdm bars when asked for and tqdm is installed (it is optional), nothing otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], *, enabled: bool, desc: str, total: int | None = None) -> Iterator[T]:
    """``iterable``, with a tqdm bar on stderr when ``enabled`` and stderr is a terminal.

    Silent (the plain iterable) when ``enabled`` is False (``--quiet``, ``--json``), when stderr is not a
    terminal, or when tqdm is not installed (it is optional).
    """
    if not enabled or not _is_tty(sys.stderr):
        return iter(iterable)
    try:
        from tqdm import tqdm
    except ImportError:
        return iter(iterable)
    return iter(tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr, dynamic_ncols=True))


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """One tqdm bar over the rows of each data pass, its label naming the pass and the iteration (tqdm optional)."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.bar = None
        self.passes = 0
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, unit="row", unit_scale=True, dynamic_ncols=True)

    def start(self, what: str, total: int | None) -> None:
        self.passes += 1
        if self.bar is not None:
            self.bar.reset(total=total)
            self.bar.set_description(f"pass {self.passes}: {what}")

    def update(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
