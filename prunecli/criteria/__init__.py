"""The criterion registry: ``@register`` a :class:`Criterion` subclass and it is a method."""

from __future__ import annotations

import difflib
import importlib

from prunecli.criteria.base import Criterion, ScoreContext
from prunecli.errors import BadInput

__all__ = ["Criterion", "ScoreContext", "register", "get_criterion", "list_criteria"]

_REGISTRY: dict[str, type[Criterion]] = {}
_BUILTINS = (
    "magnitude",
    "random",
    "synflow",
    "snip",
    "grasp",
    "npb",
    "imp",
    "iht",
    "bingo",
    "kstarts",
    "dissipating",
)


def register(cls: type[Criterion]) -> type[Criterion]:
    if cls.name in _REGISTRY:
        raise ValueError(f"criterion {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    for module in _BUILTINS:
        importlib.import_module(f"prunecli.criteria.{module}")


def list_criteria() -> list[type[Criterion]]:
    _load_builtins()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_criterion(name: str) -> type[Criterion]:
    _load_builtins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "run `prunecli methods` for the list"
        raise BadInput(f"unknown method {name!r}", hint)
    return _REGISTRY[name]
