"""The table of zoo architectures: ``@register_arch`` a builder and it is an architecture.

Kept apart from the package's ``__init__`` so that a zoo module registers itself without
importing the package that loads it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ZooModel:
    module: torch.nn.Module
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class ArchEntry:
    name: str
    summary: str
    build: Callable[..., ZooModel]


REGISTRY: dict[str, ArchEntry] = {}


_Builder = Callable[..., ZooModel]


def register_arch(name: str, summary: str) -> Callable[[_Builder], _Builder]:
    def decorate(build: _Builder) -> _Builder:
        if name in REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        REGISTRY[name] = ArchEntry(name, summary, build)
        return build

    return decorate
