"""The CPU passes' thread tuner (``pixelkm.backends.cpu.threads``): its choices against a simulated machine, and fits
whose passes change thread count on the way giving the bits of fixed-count fits."""

from __future__ import annotations

import pytest
import torch

from pixelkm.backends.cpu.threads import ThreadTuner, pass_threads

KEY = ("pass", 1000)


def drive(tuner: ThreadTuner, time_of, passes: int, top: int = 2, key=KEY) -> list[int]:
    """``passes`` passes through ``tuner``, the pass on t threads taking ``time_of(t)`` seconds; the counts used."""
    used = []
    for _ in range(passes):
        t = tuner.threads(key, top)
        used.append(t)
        tuner.record(key, t, time_of(t))
    return used


def quiet(t):  # 2 cores, both free: 10 ms of work split evenly
    return 0.010 / t


def busy(t):  # one core held by another process: on 2 threads the pass waits for the descheduled worker
    return {1: 0.010, 2: 0.016}[t]


def test_quiet_machine_keeps_the_setting():
    tuner = ThreadTuner()
    assert drive(tuner, quiet, 100) == [2] * 100
    # noise below the SLOW factor, or one slow pass alone, does not probe either
    noisy = iter([0.005, 0.006, 0.005, 0.0062, 0.005, 0.009, 0.005, 0.009, 0.005] * 5)
    assert set(drive(tuner, lambda t: next(noisy), 45)) == {2}


def test_busy_core_takes_one_thread_fewer_and_comes_back():
    tuner = ThreadTuner()
    used = drive(tuner, quiet, 5)
    used += drive(tuner, busy, 40)
    # two slow passes at 2 threads (>= SLOW x the best seen at 2), then the probe at 1 thread, which is faster: kept
    assert used[5:9] == [2, 2, 1, 1]
    after = used[9:]
    assert after.count(1) > 0.7 * len(after)
    # from 1 thread, one thread more is tried after UP_FIRST passes, then twice as many each time it loses
    probes = [i for i in range(1, len(after)) if after[i] == 2 and after[i - 1] == 1]
    assert len(probes) >= 3 and all(after[i : i + ThreadTuner.PROBE_PASSES] == [2, 2] for i in probes)
    gaps = [b - a - ThreadTuner.PROBE_PASSES for a, b in zip(probes, probes[1:])]
    assert gaps == [min(ThreadTuner.UP_FIRST * 2 ** (i + 1), ThreadTuner.UP_MAX) for i in range(len(gaps))]
    # the other process ends: a later probe at 2 threads wins, and the setting stays
    used = drive(tuner, quiet, ThreadTuner.UP_MAX + 20)
    assert used[-15:] == [2] * 15
    assert used.index(2) <= ThreadTuner.UP_MAX


def test_short_contention_costs_few_passes():
    """Another library's threads spinning for two passes after its call: back to the setting a few passes later."""
    tuner = ThreadTuner()
    drive(tuner, quiet, 5)
    used = drive(tuner, busy, 2) + drive(tuner, quiet, 20)
    assert used[:6] == [2, 2, 1, 1, 1, 1] and used[6:] == [2] * 16


def test_a_probe_that_does_not_help_is_not_kept_nor_retried_at_once():
    tuner = ThreadTuner()
    drive(tuner, quiet, 5)

    def loaded_but_parallel(t):  # slower than quiet, but 2 threads still beat 1
        return {1: 0.012, 2: 0.008}[t]

    used = drive(tuner, loaded_but_parallel, 30)
    assert used[:4] == [2, 2, 1, 1]
    assert used[4:].count(1) <= ThreadTuner.PROBE_PASSES * (len(used) // ThreadTuner.PROBE_EVERY)
    # after the failed probe, at least PROBE_EVERY passes at 2 threads before the next one
    assert used[4 : 4 + ThreadTuner.PROBE_EVERY] == [2] * ThreadTuner.PROBE_EVERY


@pytest.mark.parametrize("ratio, kept", [(0.95, False), (0.8, True)])
def test_a_probe_only_a_little_faster_is_not_kept(ratio, kept):
    """Hysteresis: one thread fewer at 0.95x the time of the setting's passes (noise, or two lucky passes) does not
    switch; at 0.8x it does."""
    tuner = ThreadTuner()
    drive(tuner, quiet, 5)
    used = drive(tuner, lambda t: {2: 0.010, 1: 0.010 * ratio}[t], 8)
    assert used[:4] == [2, 2, 1, 1]
    assert used[4:6] == ([1, 1] if kept else [2, 2])
    if not kept:
        assert used[4:8] == [2] * 4


def test_several_threads_step_down_one_at_a_time_and_kinds_are_separate():
    tuner = ThreadTuner()

    def eight_cores_two_busy(t):  # every thread beyond the 6 free cores makes the pass wait
        return 0.048 / min(t, 6) + (0.02 if t > 6 else 0.0)

    drive(tuner, lambda t: 0.048 / t, 3, top=8)
    used = drive(tuner, eight_cores_two_busy, 60, top=8)
    assert 6 in used and used[-1] <= 6 and min(used) >= 5
    # another kind of pass starts from the setting; a new setting starts a kind again
    assert tuner.threads(("other", 1), 8) == 8
    assert tuner.threads(KEY, 4) == 4


def test_bounded_memory():
    tuner = ThreadTuner()
    for i in range(3 * ThreadTuner.MAX_SHAPES):
        tuner.threads(("pass", i), 2)
        tuner.record(("pass", i), 2, 0.01)
    assert len(tuner._shapes) == ThreadTuner.MAX_SHAPES


def test_env_setting_turns_it_off(monkeypatch):
    tuner = ThreadTuner()
    monkeypatch.setenv("PIXELKM_CPU_THREADS", "2")
    seen = []
    for _ in range(10):
        tuner.run(KEY, 2, lambda t: seen.append(t) or None)
    assert seen == [2] * 10 and not tuner._shapes
    monkeypatch.delenv("PIXELKM_CPU_THREADS")
    tuner.run(KEY, 2, lambda t: seen.append(t))
    assert KEY in tuner._shapes


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_bad_thread_setting_is_named(value, monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setenv("PIXELKM_CPU_THREADS", value)
    with pytest.raises(ValueError, match="PIXELKM_CPU_THREADS must be a whole number"):
        pass_threads()
    monkeypatch.setenv("PIXELKM_CPU_THREADS", "1")
    assert pass_threads() == 1


@pytest.mark.parametrize("d, k", [(3, 9), (40, 12)])
def test_fits_switching_threads_between_passes_give_the_same_bits(d, k, monkeypatch):
    """Every pass of a fit on a different thread count (1, 2, 1, ...) against every pass on 2 and on 1: the same
    centers, labels and inertia to the bit (small-d and large-d kernels)."""
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread only")
    import pixelkm
    from pixelkm.backends.cpu import backend as cpu_backend

    g = torch.Generator().manual_seed(d)
    X = torch.randn(6 * 4096 + 11, d, generator=g) * 3
    init = X[:k].clone()

    def fit():
        km = pixelkm.KMeans(k, init=init, n_init=1, max_iter=12, tol=0.0, algorithm="lloyd", backend="cpu")
        return km.fit(X)

    class Alternating(ThreadTuner):
        def __init__(self):
            super().__init__()
            self.used = []

        def run(self, key, top, fn):
            t = 1 + len(self.used) % 2
            self.used.append(t)
            fn(t)

    alt = Alternating()
    monkeypatch.setattr(cpu_backend, "TUNER", alt)
    switching = fit()
    assert set(alt.used) == {1, 2}
    # the kernels after a pass (k-means++, the histogram's) run on the setting again, not on the pass's count
    alt.used = []  # the next pass on one thread
    pixelkm.assign_update(X, init, backend="cpu")
    assert alt.used[-1] == 1 and numba.get_num_threads() == pass_threads() > 1
    monkeypatch.setattr(cpu_backend, "TUNER", ThreadTuner())
    for threads in ("2", "1"):
        monkeypatch.setenv("PIXELKM_CPU_THREADS", threads)
        ref = fit()
        assert torch.equal(switching.cluster_centers_, ref.cluster_centers_)
        assert torch.equal(switching.labels_, ref.labels_)
        assert switching.inertia_ == ref.inertia_
