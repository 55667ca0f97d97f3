"""The package's structure holds: layers (import-linter's contract in pyproject.toml), no private name imported
across modules, Triton kernels that never import pixelkm, the packaging list, and lazy imports."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pixelkm"


def _imports(path: Path):
    """(module as written, level, imported names) of every ``from ... import`` in a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, 0, []


def test_layer_contract_holds():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    out = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_no_private_name_is_imported_across_modules():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        for module, level, names in _imports(path):
            inside = level > 0 or module == "pixelkm" or module.startswith("pixelkm.")
            for name in names:
                if inside and name.startswith("_") and not name.startswith("__"):
                    bad.append(f"{path.relative_to(REPO)}: from {'.' * level}{module} import {name}")
    assert bad == []


def test_kernels_never_import_pixelkm():
    for path in (REPO / "kernels").glob("*.py"):
        for module, level, _ in _imports(path):  # (relative imports stay inside kernels/)
            assert level <= 1, f"{path.name}: imports {module} from above kernels/"
            assert not module.startswith("pixelkm"), f"{path.name} imports {module}"


def test_packaging_lists_every_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(REPO).parts[:-1]) for p in PACKAGE.rglob("__init__.py")} | {"pixelkm._kernels"}
    assert listed == found


@pytest.mark.parametrize(
    "code",
    ["import pixelkm", "import pixelkm.cli\ntry:\n    pixelkm.cli.main(['--help'])\nexcept SystemExit:\n    pass"],
    ids=["import", "help"],
)
def test_import_and_help_load_no_torch(code):
    probe = code + "\nimport sys\nprint(sorted(m for m in ('torch', 'matplotlib', 'tqdm', 'PIL') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_public_names_load_on_first_use():
    import pixelkm

    for name in pixelkm.__all__:
        assert getattr(pixelkm, name) is not None
    assert set(pixelkm.__all__) <= set(dir(pixelkm))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pixelkm.nope  # noqa: B018
