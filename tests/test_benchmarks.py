"""The benchmark suite still imports and every benchmark runs once on tiny data. No timing is asserted.

Each asv class is instantiated with the smallest value of every numeric parameter and every value of the
others (implementations, dtypes, modes); ``setup`` builds tiny data (PIXELKM_BENCH_TINY=1) and every ``time_``,
``peakmem_`` and ``track_`` method runs once. A setup that raises NotImplementedError (asv's skip: no CUDA,
``pixelkm.image`` not there yet, ...) is reported as a skipped case with its reason.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import numbers
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SUITE = BENCH / "benchmarks"
PREFIXES = ("time_", "peakmem_", "track_", "mem_", "timeraw_")
PACKAGE = "_pixelkm_asv_suite"  # a private name: leaves any other module called "benchmarks" alone


def _suite_modules():
    """Import the asv package under a private name (its modules import each other relatively)."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, SUITE / "__init__.py", submodule_search_locations=[str(SUITE)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules([str(SUITE)]))
    return [importlib.import_module(f"{PACKAGE}.{name}") for name in names]


def _benchmark_classes():
    for module in _suite_modules():
        for name, cls in vars(module).items():
            is_class = isinstance(cls, type) and cls.__module__ == module.__name__ and not name.startswith("_")
            if is_class and any(attr.startswith(PREFIXES) for attr in dir(cls)):
                yield module.__name__.rsplit(".", 1)[1], cls


def _smallest_cases(cls):
    """Parameter tuples: the smallest of each numeric parameter, every value of the others."""
    params = getattr(cls, "params", [])
    if params and not isinstance(params[0], list | tuple):
        params = [params]
    choices = []
    for values in params:
        if all(isinstance(v, numbers.Number) for v in values):
            choices.append([min(values)])
        else:
            choices.append(list(values))
    return list(itertools.product(*choices))


CASES = [
    pytest.param(cls, case, id=f"{mod}.{cls.__name__}[{'-'.join(map(str, case))}]")
    for mod, cls in _benchmark_classes()
    for case in _smallest_cases(cls)
]


def test_suite_has_benchmarks():
    classes = {cls.__name__ for _, cls in _benchmark_classes()}
    assert {"KMeansFit", "DefaultFit", "AssignUpdate", "CPULloyd", "ImageQuantize", "BatchedFit"} <= classes


@pytest.mark.parametrize("cls, case", CASES)
def test_benchmark_runs_once(cls, case, monkeypatch):
    monkeypatch.setenv("PIXELKM_BENCH_TINY", "1")
    bench = cls()
    methods = sorted(a for a in dir(cls) if a.startswith(PREFIXES))
    assert methods
    for method in methods:  # asv runs setup before each benchmark, in its own process
        try:
            if hasattr(bench, "setup"):
                bench.setup(*case)
        except NotImplementedError as exc:
            if hasattr(bench, "teardown"):  # asv runs teardown after a skipping setup too
                bench.teardown(*case)
            pytest.skip(f"skipped by setup: {exc}")
        result = getattr(bench, method)(*case)
        if method.startswith("track_"):
            assert isinstance(result, numbers.Real) and not math.isnan(result), f"{method} returned {result!r}"
        if hasattr(bench, "teardown"):
            bench.teardown(*case)


def test_asv_conf():
    text = (BENCH / "asv.conf.json").read_text()
    conf = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))  # asv allows // comment lines
    assert conf["repo"] == ".."
    assert (BENCH / conf["benchmark_dir"] / "__init__.py").exists()
    assert conf["results_dir"].startswith(".asv")  # benchmarks/.asv/ is ignored by git


def _run_script(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_cpu_lloyd_script(tmp_path):
    out = tmp_path / "cpu.json"
    text = _run_script(
        str(BENCH / "cpu_lloyd.py"),
        "--side",
        "64",
        "--k",
        "4",
        "--iters",
        "2",
        "--repeat",
        "1",
        "--memory",
        "--memory-n",
        "50000",
        "--memory-k",
        "16",
        "--json",
        str(out),
    )
    assert "x sklearn" in text and "peak extra MiB" in text
    figures = json.loads(out.read_text())
    assert {r["impl"] for r in figures["lloyd"]} == {"pixelkm", "sklearn", "naive"}
    assert all(r["iters"] == 2 and r["s_per_iter"] > 0 for r in figures["lloyd"])
    assert len(figures["memory"]) == 2


def test_bounds_script(tmp_path):
    out = tmp_path / "bounds.json"
    text = _run_script(
        str(BENCH / "bounds.py"), "--side", "128", "--k", "4", "--max-iter", "5", "--repeat", "1", "--json", str(out)
    )
    assert "pixelkm lloyd / hamerly" in text
    rows = json.loads(out.read_text())["rows"]
    assert {r["impl"] for r in rows} == {"pixelkm lloyd", "pixelkm hamerly", "sklearn lloyd", "sklearn elkan"}
    assert all(r["ms_per_iter"] > 0 and 1 <= r["n_iter"] <= 5 for r in rows)


def test_plot_results_script(tmp_path):
    png = tmp_path / "t.png"
    _run_script(
        str(BENCH / "plot_results.py"),
        "--sides",
        "32",
        "48",
        "--k",
        "4",
        "--iters",
        "2",
        "--repeat",
        "1",
        "--out",
        str(png),
    )
    assert png.stat().st_size > 0
    data = json.loads(png.with_suffix(".json").read_text())
    assert {r["n"] for r in data["rows"]} == {32 * 32, 48 * 48}
