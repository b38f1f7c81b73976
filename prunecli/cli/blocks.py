"""Repeated blocks in tensor names, for the report's ``--group block`` view.

A name's block is its path up to the first number (``encoder.layer.0`` in
``encoder.layer.0.attention.self.query.weight``) and its type the rest
(``attention.self.query.weight``), so no architecture is named here: ``model.layers.3.mlp.up_proj``,
``h.11.attn.c_attn`` and ``layer2.1.conv1`` split the same way. A stem (``encoder.layer``) is a run
of repeated blocks when it has at least two indices; every other tensor (embeddings, a head, a
lone ``features.0``) is a row of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prunecli.errors import BadInput

if TYPE_CHECKING:
    from prunecli.jobs.report import LayerStats

# `auto` groups by block above this many rows, when grouping at least halves them
AUTO_ROWS = 30
GROUPS = ("auto", "block", "tensor")


def check_group(group: str | None, all_tensors: bool = False) -> str:
    """The ``--group`` asked for; unset: ``tensor`` under ``--all`` (the full list), else auto."""
    if group is None:
        return "tensor" if all_tensors else "auto"
    if group not in GROUPS:
        raise BadInput(f"unknown --group {group!r}", f"choose one of: {', '.join(GROUPS)}")
    return group


@dataclass
class Row:
    """One table row: a tensor, a block of tensors, or one type of tensor across blocks."""

    label: str
    layers: list[LayerStats] = field(default_factory=list)
    kind: str = "tensor"  # "tensor", "block" or "type"

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def nonzero(self) -> int:
        return sum(layer.nonzero for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.params if self.params else 0.0

    @property
    def shape(self) -> str:
        """The shape of a tensor; ``6 × 32×32`` for a type whose tensors share it; else a count."""
        shapes = {layer.shape for layer in self.layers}
        count = len(self.layers)
        if self.kind == "tensor" or (self.kind == "type" and len(shapes) == 1):
            text = "×".join(str(d) for d in next(iter(shapes)))
            return text if self.kind == "tensor" else f"{count} × {text}"
        return f"{count} tensor{'s' if count != 1 else ''}"


def split_name(name: str) -> tuple[str, str, str] | None:
    """``(stem, block, type)``: ``("encoder.layer", "encoder.layer.0", "attention.…weight")``;
    None for a name with no number before its last part."""
    parts = name.split(".")
    for index, part in enumerate(parts[:-1]):
        if part.isdigit():
            return (
                ".".join(parts[:index]),
                ".".join(parts[: index + 1]),
                ".".join(parts[index + 1 :]),
            )
    return None


def _blocks(layers: Sequence[LayerStats]) -> dict[str, tuple[str, str]]:
    """Name → (block, type) for the tensors that lie in a run of repeated blocks."""
    split = {layer.name: split_name(layer.name) for layer in layers}
    indices: dict[str, set[str]] = {}
    for found in split.values():
        if found is not None:
            indices.setdefault(found[0], set()).add(found[1])
    return {
        name: (found[1], found[2])
        for name, found in split.items()
        if found is not None and len(indices[found[0]]) >= 2
    }


def block_rows(layers: Sequence[LayerStats]) -> tuple[list[Row], list[Row]]:
    """The rows by block (tensors outside blocks as their own rows), in the layers' order, and
    the per-type summary across blocks (in order of first appearance)."""
    blocks = _blocks(layers)
    rows: list[Row] = []
    by_block: dict[str, Row] = {}
    by_type: dict[str, Row] = {}
    for layer in layers:
        if layer.name not in blocks:
            rows.append(Row(layer.name, [layer]))
            continue
        block, kind = blocks[layer.name]
        if block not in by_block:
            by_block[block] = Row(block, kind="block")
            rows.append(by_block[block])
        by_block[block].layers.append(layer)
        by_type.setdefault(kind, Row(kind, kind="type")).layers.append(layer)
    return rows, list(by_type.values())


def chosen_rows(group: str, layers: Sequence[LayerStats]) -> tuple[list[Row], list[Row] | None]:
    """The rows ``group`` picks and the per-type summary: by block (``block``; ``auto`` above
    AUTO_ROWS rows when that at least halves them), else one row per tensor and None (``tensor``,
    or ``block`` without repeated blocks)."""
    if group != "tensor":
        rows, types = block_rows(layers)
        if types and (
            group == "block" or (len(layers) > AUTO_ROWS and 2 * len(rows) <= len(layers))
        ):
            return rows, types
    return [Row(layer.name, [layer]) for layer in layers], None
