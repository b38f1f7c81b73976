"""Steps every command shares: load a model and decide what is prunable."""

from __future__ import annotations

from collections.abc import Sequence

from prunecli.core.model import LoadedModel, load_model
from prunecli.core.selection import check_finite, select_prunable


def open_model(
    source: str,
    arch: str | None = None,
    arch_kwargs: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    check_weights: bool = True,
) -> tuple[LoadedModel, list[str]]:
    """The loaded model and its prunable tensor names (finite, unless ``check_weights`` is off)."""
    model = load_model(source, arch, arch_kwargs)
    names = select_prunable(model, include or (), exclude or ())
    if check_weights:
        check_finite(model, names)
    return model, names
