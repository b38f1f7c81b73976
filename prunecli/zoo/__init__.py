"""Reference architectures from the pruning literature, registered by name.

Each entry builds a freshly initialised ``torch.nn.Module`` and knows its input shape (without
the batch dimension) and class count, so data-free criteria can run without asking the user.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from prunecli.errors import BadInput


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


_REGISTRY: dict[str, ArchEntry] = {}
_MODULES = ("mlp", "lenet", "convnets", "vgg", "resnet")


_Builder = Callable[..., ZooModel]


def register_arch(name: str, summary: str) -> Callable[[_Builder], _Builder]:
    def decorate(build: _Builder) -> _Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = ArchEntry(name, summary, build)
        return build

    return decorate


def _load_builtins() -> None:
    for module in _MODULES:
        importlib.import_module(f"prunecli.zoo.{module}")


def list_archs() -> list[ArchEntry]:
    _load_builtins()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def is_zoo_name(name: str) -> bool:
    _load_builtins()
    return name in _REGISTRY


def build_arch(name: str, kwargs: dict[str, Any] | None = None) -> ZooModel:
    """Build zoo architecture ``name`` with ``kwargs``; unknown names, bad kwargs: BadInput."""
    _load_builtins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see `prunecli init --help` for the list"
        raise BadInput(f"unknown architecture {name!r}", hint)
    try:
        return _REGISTRY[name].build(**(kwargs or {}))
    except (TypeError, ValueError) as exc:
        raise BadInput(f"cannot build {name!r} with arch kwargs {kwargs or {}}: {exc}") from None
