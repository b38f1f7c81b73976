"""How reports show training: the rounds of a training method and the per-epoch history."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from prunecli.cli.text import markdown_cell

_MAX_ROWS = 12  # longer histories show evenly spaced epochs and always the last


def _fraction(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def shown_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(rows) <= _MAX_ROWS:
        return rows
    stride = -(-len(rows) // (_MAX_ROWS - 1))
    picked = rows[::stride]
    return picked if picked[-1] is rows[-1] else [*picked, rows[-1]]


def rounds_table(rounds: list[dict[str, Any]]) -> Table:
    best = any(row.get("best_test_accuracy") is not None for row in rounds)
    table = Table(header_style="bold", title="rounds", title_justify="left")
    best_column = ["best test acc"] if best else []
    for column in ("round", "sparsity", "test acc", *best_column, "test loss", "steps"):
        table.add_column(column, justify="right")
    for row in rounds:
        cells = [str(row["round"]), _fraction(row["sparsity"]), _fraction(row.get("test_accuracy"))]
        if best:
            cells.append(_fraction(row.get("best_test_accuracy")))
        cells += [_number(row.get("test_loss")), f"{row.get('steps', 0):,}"]
        table.add_row(*cells)
    return table


def history_table(history: list[dict[str, Any]]) -> Table:
    extras = sorted({k for row in history for k in row} - _BASE)
    table = Table(header_style="bold", title="training", title_justify="left")
    for column in ("epoch", "step", "train loss", "train acc", "test loss", "test acc", *extras):
        table.add_column(column.replace("_", " "), justify="right")
    for row in shown_rows(history):
        cells = [
            str(row["epoch"]),
            f"{row['step']:,}",
            _number(row["train_loss"]),
            _fraction(row["train_accuracy"]),
            _number(row.get("test_loss")),
            _fraction(row.get("test_accuracy")),
        ]
        cells += [_extra(row.get(key)) for key in extras]
        table.add_row(*cells)
    return table


_BASE = {"epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}


def _extra(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def training_line(training: dict[str, Any]) -> str:
    settings = training["settings"]
    how = f"{settings['optimizer']} lr {settings['lr']:g}, batch {settings['batch_size']}"
    line = (
        f"trained {training.get('steps', 0):,} steps ({how}) in {training.get('seconds', 0):.1f} s"
    )
    if training.get("test_accuracy") is not None:
        line += f"; test accuracy {training['test_accuracy']:.2%}"
    if training.get("neq"):
        line += f"; NEq skipped {training['neq']['backward_saved']:.1%} of weight gradients"
    if training.get("stopped"):
        line += f"; stopped: {training['stopped']}"
    return line


def training_markdown(report_training: dict[str, Any] | None, rounds: list | None) -> list[str]:
    lines: list[str] = []
    if rounds:
        lines += ["", "| round | sparsity | test accuracy |", "|---:|---:|---:|"]
        lines += [
            f"| {r['round']} | {_fraction(r['sparsity'])} | {_fraction(r.get('test_accuracy'))} |"
            for r in rounds
        ]
    if report_training:
        lines += ["", f"- {markdown_cell(training_line(report_training))}"]
    return lines


def structure_table(structure: dict[str, Any]) -> Table:
    """Structured pruning: each group's units before → after (``report.structure``)."""
    kinds = {group["kind"] for group in structure["groups"]}
    unit = kinds.pop() + "s" if len(kinds) == 1 else "units"
    title = f"{unit} kept ({structure['granularity']})"
    if structure.get("reconstructed"):
        title += f", {len(structure['reconstructed'])} layers refit"
    table = Table(header_style="bold", title=title, title_justify="left")
    table.add_column("group")
    for column in ("before", "after", "removed"):
        table.add_column(column, justify="right")
    for group in structure["groups"]:
        removed = group["before"] - group["after"]
        table.add_row(
            group.get("label") or group["name"],
            str(group["before"]),
            str(group["after"]),
            f"{removed / group['before']:.0%}" if group["before"] else "-",
        )
    return table
