"""The report's layer tables, fitted to the terminal: names never wrap.

A table is tried boxed with parameter counts and bars, then plain (no borders, params or bars),
then plain with the names' common prefix left out (its caption says which), and last with each
long name cut at the left (``…layer.0.attention.self.query.weight``), keeping its end whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from prunecli.cli.blocks import Row, chosen_rows

if TYPE_CHECKING:
    from prunecli.jobs.report import Report

_BAR_WIDTH = 10
_WIDE_MIN = 100  # with topology columns the boxed table needs at least this many columns
_SHORTEST = 12  # names are never cut shorter than this


def percent(fraction: float) -> str:
    """Two decimals, more when two would round a fraction strictly inside (0, 1) to 0% or 100%."""
    for digits in range(2, 8):
        text = f"{fraction:.{digits}%}"
        if not (0 < fraction < 1) or text not in (f"{0:.{digits}%}", f"{1:.{digits}%}"):
            return text
    return text


def sparsity_bar(sparsity: float, width: int = _BAR_WIDTH) -> Text:
    filled = round(sparsity * width)
    bar = Text(f"{percent(sparsity):>7}" + (" " if width else ""))
    bar.append("█" * filled, style="green")
    bar.append("░" * (width - filled), style="dim")
    return bar


def mixed_dtypes(report: Report) -> bool:
    return len({layer.dtype for layer in report.layers}) > 1


def layer_tables(report: Report, console: Console, group: str = "auto") -> list[RenderableType]:
    """The per-tensor table, or (``group`` block, or auto on many tensors) the table by block
    and the summary by type; fitted to ``console.width`` in one layout."""
    rows, types = chosen_rows(group, report.layers)
    if types is None:
        return _fitted(console, report, [_Part(rows, "layer")])
    blocks = sum(row.kind == "block" for row in rows)
    return _fitted(
        console,
        report,
        [
            _Part(rows, "block or tensor"),
            _Part(types, f"type (across {blocks} blocks)", totals=False),
        ],
    )


@dataclass
class _Part:
    rows: Sequence[Row]
    header: str
    totals: bool = True


def _fitted(console: Console, report: Report, parts: Sequence[_Part]) -> list[RenderableType]:
    """The tables of ``parts``, in the first layout where all of them fit (see the top); a line
    above a table names the prefix its names were shown without."""
    width = console.width
    Shorten = Callable[[_Part], tuple[list[str], str]]  # noqa: N806 - labels and prefix

    def tables(wide: bool, shorten: Shorten) -> list[tuple[Table, str]]:
        shown = [shorten(part) for part in parts]
        return [
            (_table(report, part, labels, wide), prefix)
            for part, (labels, prefix) in zip(parts, shown, strict=True)
        ]

    def whole(part: _Part) -> tuple[list[str], str]:
        return [row.label for row in part.rows], ""

    def unprefixed(part: _Part) -> tuple[list[str], str]:
        labels = [row.label for row in part.rows]
        prefix = common_prefix(labels)
        return [label.removeprefix(prefix) for label in labels], prefix

    def shortened(part: _Part) -> tuple[list[str], str]:
        labels, prefix = unprefixed(part)
        over = _width(console, _table(report, part, labels, False)) - width
        budget = max(max((len(label) for label in labels), default=0) - over, _SHORTEST)
        return [cut(label, budget) for label in labels], prefix

    wide_ok = report.topology is None or width >= _WIDE_MIN
    layouts = ((True, whole), (False, whole), (False, unprefixed), (False, shortened))
    for wide, shorten in layouts[0 if wide_ok else 1 :]:
        candidates = tables(wide, shorten)
        if shorten is shortened or all(_width(console, t) <= width for t, _ in candidates):
            break
    shown: list[RenderableType] = []
    for table, prefix in candidates:
        if prefix:
            shown.append(Text(f"names below start with {prefix}"))
        shown.append(table)
    return shown


def _width(console: Console, table: Table) -> int:
    """The fewest columns ``table`` needs with every cell on one line."""
    return console.measure(table, options=console.options.update(max_width=1 << 20)).maximum


def common_prefix(names: Sequence[str]) -> str:
    """The dotted path all ``names`` start with (``bert.encoder.``); empty for one name, or when
    it would leave a name empty."""
    if len(names) < 2:
        return ""
    split = [name.split(".") for name in names]
    shared: list[str] = []
    for parts in zip(*(parts[:-1] for parts in split), strict=False):
        if len(set(parts)) != 1:
            break
        shared.append(parts[0])
    return "".join(part + "." for part in shared)


def cut(name: str, budget: int) -> str:
    """``name`` when it fits ``budget`` characters; else ``…`` and its longest dotted tail that
    fits (the plain last characters when even its last part does not)."""
    if len(name) <= budget:
        return name
    tail = name[len(name) - (budget - 1) :]
    dot = tail.find(".")
    if 0 <= dot < len(tail) - 1:  # start at a whole part
        tail = tail[dot + 1 :]
    return "…" + tail


def _table(report: Report, part: _Part, labels: Sequence[str], wide: bool) -> Table:
    """Name, shape, (dtype when mixed), params, non-zero, sparsity with a bar; totals as footer.

    With topology also effective sparsity and effective/all nodes; collapsed layers in red.
    Narrow (``wide`` off): no params (the shape says it), no bars, no borders."""
    rows, header, totals = part.rows, part.header, part.totals
    mixed = mixed_dtypes(report)
    topology = report.topology
    bar = _BAR_WIDTH if wide else 0
    frame = {} if wide else {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False}
    table = Table(
        show_footer=totals,
        header_style="bold",
        footer_style="bold",
        collapse_padding=not wide,
        **frame,
    )
    table.add_column(header, footer="total", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    if mixed:
        table.add_column("dtype", no_wrap=True)
    if wide:
        table.add_column(
            "params", justify="right", no_wrap=True, footer=f"{report.prunable_params:,}"
        )
    table.add_column(
        "non-zero", justify="right", no_wrap=True, footer=f"{report.prunable_nonzero:,}"
    )
    table.add_column(
        "sparsity",
        justify="left" if wide else "right",
        no_wrap=True,
        footer=sparsity_bar(report.sparsity, bar),
    )
    if topology is not None:
        table.add_column(
            Text("eff.\nsparsity"),  # a Text: strings are data, their newlines escaped
            justify="right",
            no_wrap=True,
            footer=f"{percent(topology.effective_sparsity)}",
        )
        table.add_column(
            "nodes",
            justify="right",
            no_wrap=True,
            footer=f"{topology.effective_nodes:,}/{topology.nodes:,}",
        )
    for row, label in zip(rows, labels, strict=True):
        dtypes = {layer.dtype for layer in row.layers}
        cells: list[str | Text] = [label, row.shape]
        if mixed:
            cells.append(dtypes.pop() if len(dtypes) == 1 else "mixed")
        if wide:
            cells.append(f"{row.params:,}")
        cells += [f"{row.nonzero:,}", sparsity_bar(row.sparsity, bar)]
        style = None
        if topology is not None:
            found = [t for t in map(topology.layer, (x.name for x in row.layers)) if t]
            if found:
                weights = sum(t.weights for t in found)
                kept = sum(t.effective_weights for t in found)
                cells += [
                    percent(1.0 - kept / weights if weights else 0.0),
                    f"{sum(t.effective_nodes for t in found):,}/{sum(t.nodes for t in found):,}",
                ]
                style = "red" if any(t.collapsed for t in found) else None
            else:
                cells += ["", ""]
        table.add_row(*cells, style=style)
    return table
