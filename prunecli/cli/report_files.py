"""The ``--report`` files: their formats, Markdown, SVG, HTML, JSON, PNG and PDF, and saving them."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from prunecli.cli.report_view import (
    cost_line,
    export_lines,
    percent,
    quality_lines,
    render_report,
    topology_line,
)
from prunecli.cli.text import DataConsole, markdown_cell, printable
from prunecli.cli.training_view import training_markdown
from prunecli.errors import BadInput
from prunecli.io.atomic import atomic_output
from prunecli.io.paths import Target

if TYPE_CHECKING:
    from prunecli.jobs.report import Report

REPORT_SUFFIXES = (".json", ".md", ".svg", ".html")
CURVE_SUFFIXES = (".svg", ".png", ".pdf")  # with rounds: the accuracy curve


def report_markdown(report: Report) -> str:
    topology = report.topology
    extra = " eff. sparsity | nodes |" if topology else ""
    lines = [
        f"# prunecli {report.command}: {markdown_cell(report.model['path'])}",
        "",
        f"| layer | shape | dtype | params | non-zero | sparsity |{extra}",
        "|---|---|---|---:|---:|---:|" + ("---:|---:|" if topology else ""),
    ]
    for layer in report.layers:
        shape = "×".join(str(d) for d in layer.shape)
        name, dtype = markdown_cell(layer.name), markdown_cell(layer.dtype)
        row = f"| {name} | {shape} | {dtype} | {layer.params:,} | {layer.nonzero:,} | {percent(layer.sparsity)} |"
        if topology:
            found = topology.layer(layer.name)
            row += (
                f" {percent(found.effective_sparsity)} | {found.effective_nodes:,}/{found.nodes:,}"
                f"{' **collapsed**' if found.collapsed else ''} |"
                if found
                else " | |"
            )
        lines.append(row)
    total = f"| **prunable total** | | | {report.prunable_params:,} | {report.prunable_nonzero:,} | {percent(report.sparsity)} |"
    if topology:
        total += f" {percent(topology.effective_sparsity)} | {topology.effective_nodes:,}/{topology.nodes:,} |"
    lines.append(total)
    line = topology_line(report)
    if line is not None:
        lines += ["", markdown_cell(line.plain)]
    cost = cost_line(report)
    if cost is not None:
        lines += ["", markdown_cell(cost)]
    if report.pruning:
        lines += ["", "```json", json.dumps(report.pruning, indent=2), "```"]
    lines += training_markdown(report.training, None)
    if report.export:
        lines += ["", *[f"- {markdown_cell(line)}" for line in export_lines(report)]]
    if report.quality:
        lines += ["", *[f"- {markdown_cell(line)}" for line in quality_lines(report)]]
    lines += [
        f"- {markdown_cell(c.name)}: {'passed' if c.passed else 'FAILED'} — "
        f"{markdown_cell(c.message)}"
        for c in report.checks
    ]
    lines += [f"- warning: {markdown_cell(w)}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def check_report(path: Path | None, curve: bool = False) -> list[Target]:
    """Refuse a ``--report`` of an unknown kind before any work; the report's path as a target
    for io.paths.check_outputs (empty without ``--report``).

    ``curve``: the run has rounds (a training method), so .svg, .png and .pdf draw accuracy
    against sparsity with matplotlib (evaluation/plots.py), which must then be installed."""
    if path is None:
        return []
    suffix = path.suffix.lower()
    if suffix in (".png", ".pdf") and not curve:
        raise BadInput(
            f"--report {path}: a {suffix} report draws the rounds of a training method (e.g. imp)",
            "use .json, .md, .svg or .html",
        )
    if suffix not in REPORT_SUFFIXES and suffix not in (".png", ".pdf"):
        kinds = ".json, .md, .svg, .html, .png or .pdf" if curve else ".json, .md, .svg or .html"
        raise BadInput(f"--report {path}: unknown report format", f"use {kinds}")
    if curve and suffix in CURVE_SUFFIXES:
        from prunecli.evaluation.plots import require_matplotlib

        require_matplotlib()
    return [Target(str(path), "--report")]


def save_report(report: Report, path: Path) -> None:
    data = report_bytes(report, path)
    with atomic_output(str(path)) as stream:
        stream.write(data)


def report_bytes(report: Report, path: Path, group: str = "auto") -> bytes:
    """The ``--report`` file's contents for ``path``'s suffix, rendered in memory; ``group``
    picks the layer rows of an .svg or .html (the terminal's); .json and .md list every tensor."""
    suffix = path.suffix.lower()
    rounds = (report.pruning or {}).get("rounds")
    if rounds and suffix in CURVE_SUFFIXES:
        from prunecli.evaluation.plots import rounds_curve

        method = printable(report.pruning["method"])
        title = f"{method}: test accuracy against sparsity"
        return rounds_curve(rounds, suffix[1:], title, method)
    if suffix == ".json":
        text = json.dumps(report.to_json(), indent=2) + "\n"
    elif suffix == ".md":
        text = report_markdown(report)
    elif suffix in (".svg", ".html"):
        recorder = DataConsole(record=True, file=io.StringIO(), width=120, force_terminal=True)
        render_report(recorder, report, group)
        text = recorder.export_svg(title="prunecli") if suffix == ".svg" else recorder.export_html()
    else:
        raise BadInput(f"--report {path}: unknown report format", "use .json, .md, .svg or .html")
    return text.encode("utf-8")
