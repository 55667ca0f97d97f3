"""The one progress helper: tqdm bars when asked for and tqdm is installed (it is optional), nothing otherwise."""

from __future__ import annotations

from collections.abc import Iterable


def track(items: list, enabled: bool, desc: str) -> Iterable:
    """``items`` wrapped in a tqdm bar when ``enabled`` and tqdm is installed."""
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, leave=False, disable=None)  # disable=None: only on a terminal


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
