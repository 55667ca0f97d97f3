"""Every launch configuration of the Triton kernels compiles for sm_90 (H100/H200) within its limits, no GPU needed.

``benchmarks/sass_report.py`` compiles ahead of time with ``triton.compile(..., target=GPUTarget("cuda", 90, 32))``
and reads the cubins with the ``cuobjdump``/``ptxas`` that ship in the triton wheel. It runs in a subprocess:
conftest.py sets TRITON_INTERPRET=1 in this process when there is no GPU, and the interpreter cannot compile.
The first run compiles about a hundred kernels (a few minutes on two cores); triton caches them afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "sass_report.py"


def _nvidia_backend_missing() -> str | None:
    try:
        import triton  # noqa: F401
        from triton.backends.nvidia import compiler  # noqa: F401
    except ImportError as exc:
        return f"triton's nvidia backend is not installed ({exc})"
    return None


pytestmark = pytest.mark.skipif(_nvidia_backend_missing() is not None, reason=str(_nvidia_backend_missing() or ""))


def _report(*args: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, str(REPORT), "--json", *args], capture_output=True, text=True, env=env, timeout=1800
    )
    if proc.returncode == 2:
        pytest.skip(proc.stderr.strip())
    try:
        rows = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"sass_report.py {' '.join(args)} printed no JSON (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return rows


@pytest.mark.slow
def test_every_launch_configuration_fits_sm90():
    """No spills, shared memory within 227 KB, at most 255 registers: every configuration the launcher can pick."""
    rows = _report("--all")
    assert len(rows) > 50, "all_configs() lost configurations"
    bad = [r for r in rows if not r["ok"]]
    assert not bad, "configurations that spill or break an sm_90 limit:\n" + "\n".join(map(str, bad))


def test_roofline_cases_meet_their_targets():
    """The roofline cases: the report's keys, no spills, <= 10 SASS per (point, center) for the uint8 image at
    K >= 64, and estimates within the targets (a model of the compiled code, not a measurement)."""
    rows = _report()
    keys = ["case", "triton", "k", "d", "dtype", "registers", "spill_bytes", "shared_bytes", "sass_per_pair"]
    keys += ["estimate_ms", "floor_ms", "target_ms"]
    assert rows and all(list(r) == keys for r in rows)
    for r in rows:
        assert r["spill_bytes"] == 0, r
        assert r["estimate_ms"] >= r["floor_ms"] > 0, r
        if r["target_ms"] is not None:
            assert r["estimate_ms"] <= r["target_ms"], r
        if r["d"] <= 8 and r["dtype"] == "uint8" and r["k"] >= 64:
            assert r["sass_per_pair"] <= 10, r
