"""The one progress helper of the image toolkit: a tqdm bar on stderr, shown only on a terminal."""

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
