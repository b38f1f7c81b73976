"""The package's layout holds: no module over 400 lines, no import cycle, no upward import."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import check_layout  # noqa: E402


def test_the_package_has_no_cycle_no_upward_import_and_no_long_module() -> None:
    assert check_layout.problems(ROOT / "prunecli") == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "io/__init__.py": "",
            "io/a.py": "from pkg.io.b import x\n",
            "io/b.py": "def f():\n    from pkg.io import a\n",
        },
    )
    assert check_layout.problems(root) == ["import cycle: pkg.io.a ↔ pkg.io.b"]


def test_an_upward_import_and_a_long_module_are_found(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "io/__init__.py": "",
            "io/low.py": "from pkg.jobs import high\n" + "x = 1\n" * 400,
            "jobs/__init__.py": "",
            "jobs/high.py": "",
        },
    )
    found = check_layout.problems(root)
    assert any(line.endswith("low.py: 401 lines (at most 400)") for line in found)
    assert "pkg.io.low imports pkg.jobs.high: io is below jobs" in found


def test_a_dynamic_import_of_a_package_counts(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "criteria/__init__.py": (
                "import importlib\ndef load(n):\n    importlib.import_module(f'pkg.criteria.{n}')\n"
            ),
            "criteria/m.py": "from pkg.criteria import register\n",
        },
    )
    assert check_layout.problems(root) == ["import cycle: pkg.criteria ↔ pkg.criteria.m"]


@pytest.mark.parametrize("flag", [[], ["--graph"]])
def test_the_script_runs_as_a_command(flag: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_layout.py"), *flag],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == (0 if flag else int(bool(check_layout.problems(ROOT / "prunecli"))))
    assert "prunecli" in done.stdout


def _prunecli_imports(path: Path) -> list[tuple[str, str | None]]:
    """Every ``import prunecli…`` / ``from prunecli… import name`` in ``path``, anywhere."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prunecli"):
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.startswith("prunecli")]
    return found


@pytest.mark.parametrize("folder", ["benchmarks", "scripts", "examples", "tests"])
def test_every_prunecli_import_outside_the_package_resolves(folder: str) -> None:
    """Benchmarks and scripts import inside functions the tests may never call: check them all."""
    missing = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for module, name in _prunecli_imports(path):
            imported = importlib.import_module(module)
            if name is None or hasattr(imported, name):
                continue
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{path.relative_to(ROOT)}: from {module} import {name}")
    assert missing == []


def test_the_command_line_starts_without_torch() -> None:
    """`--help`, `--version` and option errors answer at once: torch loads only for real work."""
    code = (
        "import sys\n"
        "import prunecli.cli.app\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'transformers', 'onnx') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_test_files_have_unique_names() -> None:
    """Test folders have no __init__.py, so pytest imports each test file by its base name."""
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
