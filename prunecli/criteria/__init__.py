"""The pruning criteria, one module each, and their registry (get_criterion, list_criteria); imports pruning and below."""

from __future__ import annotations

import difflib

from prunecli.criteria.registry import REGISTRY as _REGISTRY
from prunecli.criteria.registry import register
from prunecli.errors import BadInput
from prunecli.pruning.criterion import Criterion

__all__ = ["register", "get_criterion", "list_criteria"]


def _load_builtins() -> None:
    """Import the built-in criteria, each of which registers itself (late: some import scipy)."""
    from prunecli.criteria import (  # noqa: F401
        bingo,
        dissipating,
        grasp,
        iht,
        imp,
        kstarts,
        magnitude,
        npb,
        random,
        snip,
        sparsegpt,
        synflow,
        taylor,
        wanda,
    )


def list_criteria() -> list[type[Criterion]]:
    _load_builtins()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_criterion(name: str) -> type[Criterion]:
    _load_builtins()
    if not isinstance(name, str) or name not in _REGISTRY:  # a number from Python, too
        text = name if isinstance(name, str) else ""
        close = difflib.get_close_matches(text, list(_REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "run `prunecli methods` for the list"
        raise BadInput(f"unknown method {name!r}", hint)
    return _REGISTRY[name]
