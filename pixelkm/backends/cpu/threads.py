"""How many threads a CPU pass runs on: the package's setting, and fewer while a core is busy with other work.

The kernels' results do not depend on the thread count (their float64 partials are reduced in block order), so the
count can change from one pass to the next without changing a bit of any fit. What it changes is time: a pass is one
parallel region, and the region ends when its last worker does. While another process holds one of the cores, the
worker there is descheduled for a time slice now and then, and a pass that would take 3-15 ms waits for it: passes on
2 threads come out either at their quiet time or 3-6x slower. Measured on the 2-core machine with a process spinning
on one core (``benchmarks/cpu_threads.py --load``: ``n = 200,000, d = 32, K = 16``; ``n = 2^20, d = 3, K = 64``;
``n = 100,000, d = 256, K = 32``; 20 passes each, interleaved, 2026-12-03 21:07 UTC), ms per pass, median (mean),
2 threads 6.2 (7.9), 18.5 (17.0), 33.3 (28.3) against 1 thread 6.1 (7.0), 11.9 (11.8), 24.9 (25.5); quiet, 2
threads, 3.1 (3.2), 5.2 (5.8), 13.5 (13.6).

:class:`ThreadTuner` measures instead of guessing: every full pass of a given shape is timed; when two in a row
take more than :attr:`ThreadTuner.SLOW` times the fastest seen at their count, the next passes try fewer threads (a
quarter fewer, at least one: 2 -> 1, 8 -> 6, 16 -> 12), kept if clearly faster (:attr:`ThreadTuner.KEEP`); from a
lower count, one thread more is tried after :attr:`ThreadTuner.UP_FIRST` passes, then after twice as many each time
it loses (at most :attr:`ThreadTuner.UP_MAX`), so the count climbs back to the most that still gains, and to the
setting soon after the other work ends. Quiet, no pass is slow and the count stays the setting. What it gains in
whole fits: docs/cpu.md ("A busy core").
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch


def pass_threads() -> int:
    """Threads for one pass at most: ``torch.get_num_threads()`` (the package's one thread setting), at most the cores
    this process may run on. ``PIXELKM_CPU_THREADS`` overrides (and turns :class:`ThreadTuner` off)."""
    import numba

    top = numba.config.NUMBA_NUM_THREADS
    env = os.environ.get("PIXELKM_CPU_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"PIXELKM_CPU_THREADS must be a whole number of threads, 1 or more; it is {env!r}")
        return min(int(env), top)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = top
    return max(1, min(torch.get_num_threads(), cores, top))


class _Shape:
    """What the tuner knows of one kind of pass."""

    __slots__ = ("top", "cur", "best", "last", "slow", "since", "probe", "left", "wait")

    def __init__(self, top: int, wait: int) -> None:
        self.top = self.cur = top
        self.best: dict[int, float] = {}  # the fastest pass seen at each count
        self.last: dict[int, list[float]] = {}  # the latest passes at each count (PROBE_PASSES of them)
        self.slow = 0  # slow passes in a row at ``cur``
        self.since = 0  # passes at ``cur`` since the last probe
        self.probe: int | None = None  # the count being tried
        self.left = 0  # passes left in the probe
        self.wait = wait  # passes below the setting before the next probe of one thread more


class ThreadTuner:
    """Per kind of pass (a hashable key: the shape, the dtype, what the pass computes), the thread count to run the
    next one on; :meth:`record` its time. Bounded memory (:attr:`MAX_SHAPES` kinds, least recently used dropped)."""

    #: a pass slower than this many times the fastest seen at its count is a sign of a busy core
    SLOW = 1.3
    #: slow passes in a row before fewer threads are tried
    SLOW_RUN = 2
    #: passes of a probe (their mean is compared with that of as many latest passes at the current count)
    PROBE_PASSES = 2
    #: a probe's count is kept when its mean is below this many times the current count's: under load the passes on
    #: all threads come out either fast (the other process descheduled for a while) or slow, and two lucky passes
    #: alone would switch back and forth (2-core machine, d = 32, K = 16: 3.3 or 15-20 ms on 2 threads, 6 on 1)
    KEEP = 0.85
    #: passes at a count before the next probe of fewer threads, after one that did not help
    PROBE_EVERY = 8
    #: passes below the setting before one thread more is tried, doubled after each try that loses (the other
    #: work may be short: another library's threads spinning for a while after its call), at most UP_MAX
    UP_FIRST = 2
    UP_MAX = 32
    MAX_SHAPES = 64

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self._shapes: OrderedDict[Hashable, _Shape] = OrderedDict()
        self._lock = threading.Lock()  # fits in several Python threads share the tuner

    def threads(self, key: Hashable, top: int) -> int:
        """The count for the next pass of kind ``key``, at most ``top`` (the setting: :func:`pass_threads`)."""
        with self._lock:
            return self._threads(key, top)

    def _threads(self, key: Hashable, top: int) -> int:
        s = self._shapes.get(key)
        if s is None or s.top != top:  # new, or the setting changed: start again from the setting
            s = self._shapes[key] = _Shape(top, self.UP_FIRST)
            while len(self._shapes) > self.MAX_SHAPES:
                self._shapes.popitem(last=False)
        self._shapes.move_to_end(key)
        return s.cur if s.probe is None else s.probe

    def record(self, key: Hashable, threads: int, seconds: float) -> None:
        """The pass of kind ``key`` that :meth:`threads` gave ``threads`` took ``seconds``."""
        with self._lock:
            self._record(key, threads, seconds)

    def _record(self, key: Hashable, threads: int, seconds: float) -> None:
        s = self._shapes.get(key)
        if s is None:
            return
        s.best[threads] = min(seconds, s.best.get(threads, seconds))
        last = s.last.setdefault(threads, [])
        last.append(seconds)
        del last[: -self.PROBE_PASSES]
        if s.probe is not None:
            if threads != s.probe:
                return
            s.left -= 1
            if s.left > 0:
                return
            up = threads > s.cur
            if self._mean(s, threads) < self.KEEP * self._mean(s, s.cur):
                s.cur = threads
                s.wait = self.UP_FIRST
            elif up:
                s.wait = min(2 * s.wait, self.UP_MAX)
            s.probe, s.slow, s.since = None, 0, 0
            return
        if threads != s.cur:
            return
        s.since += 1
        s.slow = s.slow + 1 if seconds > self.SLOW * s.best[threads] else 0
        fewer = s.cur - max(1, s.cur // 4)
        down = s.cur > 1 and s.slow >= self.SLOW_RUN and (fewer not in s.last or s.since >= self.PROBE_EVERY)
        if down:
            s.probe = fewer
        elif s.cur < s.top and s.since >= s.wait:
            s.probe = s.cur + 1
        if s.probe is not None:
            s.left = self.PROBE_PASSES
            s.last.pop(s.probe, None)  # judged on its own passes, not on the ones of a while ago

    @staticmethod
    def _mean(s: _Shape, threads: int) -> float:
        last = s.last[threads]
        return sum(last) / len(last)

    def run(self, key: Hashable, top: int, fn: Callable[[int], None]) -> None:
        """``fn(threads)`` (one pass on that many threads), timed and recorded. With ``PIXELKM_CPU_THREADS`` set,
        or a setting of one thread, ``fn(top)`` untimed."""
        if top <= 1 or os.environ.get("PIXELKM_CPU_THREADS", "").strip():
            fn(top)
            return
        t = self.threads(key, top)
        t0 = self.clock()
        fn(t)
        self.record(key, t, self.clock() - t0)


#: the process's tuner (the backend's full passes)
TUNER = ThreadTuner()
