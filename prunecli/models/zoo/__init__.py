"""Reference architectures from the pruning literature, registered by name.

Each entry builds a freshly initialised ``torch.nn.Module`` and knows its input shape (without
the batch dimension) and class count, so data-free criteria can run without asking the user.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from typing import Any

import torch

from prunecli.errors import BadInput
from prunecli.models.zoo.registry import REGISTRY as _REGISTRY
from prunecli.models.zoo.registry import ArchEntry, ZooModel, register_arch

__all__ = ["ArchEntry", "ZooModel", "register_arch", "list_archs", "is_zoo_name", "build_arch"]


def _load_builtins() -> None:
    """Import the zoo's modules, each of which registers its architectures."""
    from prunecli.models.zoo import convnets, lenet, mlp, resnet, vgg  # noqa: F401


def list_archs() -> list[ArchEntry]:
    _load_builtins()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def is_zoo_name(name: str) -> bool:
    _load_builtins()
    return name in _REGISTRY


def build_arch(
    name: str, kwargs: dict[str, Any] | None = None, device: str | None = None
) -> ZooModel:
    """Build zoo architecture ``name`` with ``kwargs``; unknown names, bad kwargs: BadInput.

    ``device="meta"`` builds it without memory (shapes only). Any other build is sized on the
    meta device first, so kwargs such as ``{"widths": [10**9, 10**9]}`` are refused instead of
    allocating exabytes."""
    _load_builtins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see `prunecli init --help` for the list"
        raise BadInput(f"unknown architecture {name!r}", hint)
    if device != "meta":
        _check_size(name, kwargs, _build(name, kwargs, "meta").module)
    return _build(name, kwargs, device)


def _build(name: str, kwargs: dict[str, Any] | None, device: str | None) -> ZooModel:
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return _REGISTRY[name].build(**(kwargs or {}))
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
        # kwargs come from the command line or a file: torch's refusal is a bad input too
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"cannot build {name!r} with arch kwargs {kwargs or {}}: {detail}") from None


def _check_size(name: str, kwargs: dict[str, Any] | None, meta: torch.nn.Module) -> None:
    tensors = [*meta.parameters(), *meta.buffers()]
    size = sum(t.numel() * t.element_size() for t in tensors)
    if size > _memory_bytes():
        raise BadInput(
            f"cannot build {name!r} with arch kwargs {kwargs or {}}: it would take "
            f"{size / 2**30:,.1f} GiB, more than this machine's memory",
        )


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no bound but the allocator's
        return 1 << 62
