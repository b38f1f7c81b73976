#!/usr/bin/env python3
"""Check prunecli's layout: no module over 400 lines, no import cycle, no upward import.

Walks ``prunecli/`` with :mod:`ast`, counting every import, including those inside functions
and under ``TYPE_CHECKING``. A folder may import its own modules, folders of its own layer and
folders of lower layers, never a higher one (docs/architecture.md). Prints one line per
problem and exits 1 if there is any; ``--graph`` prints the import graph instead.

    python3 scripts/check_layout.py [--graph] [ROOT]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_LINES = 400

# Highest first; a module may import from its own layer or any layer below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "__main__", "api", "cli"),
    ("jobs",),
    ("criteria", "streaming", "training", "calibration", "evaluation"),
    ("pruning", "topology", "structure"),
    ("models", "data"),
    ("io",),
    ("errors", "version"),
)
RANK = {name: len(LAYERS) - i for i, names in enumerate(LAYERS) for name in names}


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` under ``root`` (a package)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(name: str, path: Path, known: dict[str, Path], package: str) -> set[str]:
    """The modules of ``package`` that module ``name`` imports anywhere in its text."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in known else base for t in targets]
        elif isinstance(node, ast.Call) and _called(node) == "import_module" and node.args:
            targets = _dynamic(node.args[0], known)
        else:
            continue
        for target in targets:
            if target == package or target.startswith(package + "."):
                resolved = _resolve(target, known)
                if resolved and resolved != name:
                    found.add(resolved)
    return found


def _called(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _dynamic(arg: ast.expr, known: dict[str, Path]) -> list[str]:
    """``importlib.import_module("pkg.x")`` → pkg.x; ``f"pkg.{name}"`` → every module under pkg."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = str(arg.values[0].value)
        return [name for name in known if name.startswith(prefix)]
    return []


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def problems(root: Path) -> list[str]:
    known = modules(root)
    package = root.name
    graph = {name: imports(name, path, known, package) for name, path in known.items()}
    found = []
    for name, path in known.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            found.append(f"{path}: {lines} lines (at most {MAX_LINES})")
        if layer(name) not in RANK:
            found.append(
                f"{path}: folder {layer(name)!r} is in no layer of scripts/check_layout.py"
            )
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if RANK.get(layer(target), 0) > RANK.get(layer(name), 0):
                found.append(f"{name} imports {target}: {layer(name)} is below {layer(target)}")
    for component in cycles(graph):
        found.append("import cycle: " + " ↔ ".join(component))
    return found


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent / "prunecli"
    if "--graph" in argv:
        known = modules(root)
        for name, path in known.items():
            print(name, "->", " ".join(sorted(imports(name, path, known, root.name))))
        return 0
    found = problems(root)
    for line in found:
        print(line)
    if not found:
        print(
            f"{root}: {len(modules(root))} modules, none over {MAX_LINES} lines, no cycle, no upward import"
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
