"""The table of methods: ``@register`` a :class:`Criterion` subclass and it is a method.

Kept apart from the package's ``__init__`` so that a criterion module registers itself without
importing the package that loads it."""

from __future__ import annotations

from prunecli.pruning.criterion import Criterion

REGISTRY: dict[str, type[Criterion]] = {}


def register(cls: type[Criterion]) -> type[Criterion]:
    if cls.name in REGISTRY:
        raise ValueError(f"criterion {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls
    return cls
