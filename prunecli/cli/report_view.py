"""How a Report looks on a terminal: the layer table, its summary lines and their formatting."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from prunecli.cli.text import styled
from prunecli.cli.training_view import history_table, rounds_table, training_line

if TYPE_CHECKING:
    from prunecli.jobs.report import Report

_BAR_WIDTH = 10


def percent(fraction: float) -> str:
    """Two decimals, more when two would round a fraction strictly inside (0, 1) to 0% or 100%."""
    for digits in range(2, 8):
        text = f"{fraction:.{digits}%}"
        if not (0 < fraction < 1) or text not in (f"{0:.{digits}%}", f"{1:.{digits}%}"):
            return text
    return text


def human_size(nbytes: int | None) -> str:
    if nbytes is None or nbytes < 0:
        return "?"
    size = float(nbytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def sparsity_bar(sparsity: float, width: int = _BAR_WIDTH) -> Text:
    filled = round(sparsity * width)
    bar = Text(f"{percent(sparsity):>7}" + (" " if width else ""))
    bar.append("█" * filled, style="green")
    bar.append("░" * (width - filled), style="dim")
    return bar


def _mixed_dtypes(report: Report) -> bool:
    return len({layer.dtype for layer in report.layers}) > 1


def paths_text(log10_paths: float | None) -> str:
    """An effective-path count for people: exact when small, a power of ten when large."""
    if log10_paths is None:
        return "more than 10^616"
    if log10_paths == -math.inf:
        return "0"
    if log10_paths < 6:
        return f"{round(10**log10_paths):,}"
    return f"10^{log10_paths:.1f}"


def topology_line(report: Report) -> Text | None:
    """One line: effective paths, effective sparsity, collapsed layers (red when any)."""
    topology = report.topology
    if topology is None:
        return None
    collapsed = topology.collapsed_layers
    named = ", ".join(collapsed[:3]) + (", …" if len(collapsed) > 3 else "")
    line = styled(
        f"effective paths {paths_text(topology.log10_paths)}, "
        f"effective sparsity {percent(topology.effective_sparsity)}, "
        f"collapsed layers: {f'{len(collapsed)} ({named})' if collapsed else 'none'}"
    )
    if collapsed or topology.log10_paths == -math.inf:
        line.stylize("red")
    return line


def report_table(report: Report, width: int | None = None) -> Table:
    """Layer, shape, (dtype when mixed), params, non-zero, sparsity with a bar; totals as footer.

    With topology also effective sparsity and effective/all nodes; collapsed layers in red. Below
    100 columns params (the shape says it), the bars and the borders go, so 80 columns stay
    readable and names such as ``layer3.2.conv2.weight`` fit on one line.
    """
    mixed = _mixed_dtypes(report)
    topology = report.topology
    wide = topology is None or width is None or width >= 100
    bar = _BAR_WIDTH if wide else 0
    frame = {} if wide else {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False}
    table = Table(
        show_footer=True,
        header_style="bold",
        footer_style="bold",
        collapse_padding=not wide,
        **frame,
    )
    table.add_column("layer", footer="total", overflow="fold", ratio=1)
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
    for layer in report.layers:
        shape = "×".join(str(d) for d in layer.shape)
        cells: list[str | Text] = [layer.name, shape, *([layer.dtype] if mixed else [])]
        if wide:
            cells.append(f"{layer.params:,}")
        cells += [f"{layer.nonzero:,}", sparsity_bar(layer.sparsity, bar)]
        style = None
        if topology is not None:
            found = topology.layer(layer.name)
            cells += (
                [
                    f"{percent(found.effective_sparsity)}",
                    f"{found.effective_nodes:,}/{found.nodes:,}",
                ]
                if found
                else ["", ""]
            )
            style = "red" if found and found.collapsed else None
        table.add_row(*cells, style=style)
    return table


def export_lines(report: Report) -> list[str]:
    """The `export` section in a few plain lines: artifact, sizes, zeros, notes."""
    export = report.export
    if not export:
        return []
    about = [export["storage"].replace("-", " ")]
    if export["opset"]:
        about.append(f"opset {export['opset']}")
    if export["dynamic_batch"]:
        about.append("dynamic batch")
    sizes = f"{human_size(export['file_bytes'])}"
    if export["dense_bytes"] != export["file_bytes"]:
        sizes += (
            f", {export['compression_ratio']:.3f}× the dense {export['format']} "
            f"({human_size(export['dense_bytes'])})"
        )
    sizes += f"; source {human_size(export['source_bytes'])}"
    lines = [f"export to {export['format']} ({', '.join(about)}): {sizes}"]
    zeros = export["sparsity"]
    kept = "zeros preserved" if zeros["zeros_preserved"] else "ZEROS LOST"
    lines.append(
        f"prunable weights: source {percent(zeros['source_sparsity'])} sparse, "
        f"exported {percent(zeros['exported_sparsity'])} ({kept})"
    )
    if export["sparse_initializers"]:
        sparse = export["sparse_initializers"]
        lines.append(
            f"sparse initializers: {sparse['converted']} of {sparse['candidates']} floating "
            "initializers stored sparse (the rest are smaller dense)"
        )
    lines += [f"note: {note}" for note in export["notes"]]
    if not export["written"]:
        lines.append(f"nothing was written to {export['path']}")
    return lines


def render_report(console: Console, report: Report) -> None:
    model = report.model
    arch = model["arch"] or model.get("hf_architecture") or "weights only"
    about = [model["format"], arch, human_size(model["file_bytes"])]
    if report.layers and not _mixed_dtypes(report):
        about.append(report.layers[0].dtype)
    console.print(styled((str(model["path"]), "bold"), "  ", " · ".join(map(str, about))))
    console.print(report_table(report, console.width))
    console.print(
        f"all tensors: {report.all_params:,} parameters, {report.all_nonzero:,} non-zero "
        f"({percent(1 - report.all_nonzero / max(report.all_params, 1))} sparse)"
    )
    line = topology_line(report)
    if line is not None:
        console.print(line)
    for shard in model.get("shards") or []:
        figures = f"{shard['tensors']} tensors, {human_size(shard['file_bytes'])}"
        if "nonzero" in shard:
            sparse = percent(1 - shard["nonzero"] / max(shard["params"], 1))
            figures += f", {shard['params']:,} parameters, {sparse} zero"
        console.print(f"shard {shard['file']}: {figures}")
    took = f" in {report.seconds:.2f} s" if report.seconds is not None else ""
    if report.pruning:
        p = report.pruning
        rounds = f"{p['iterations']} round{'s' if p['iterations'] != 1 else ''}"
        console.print(
            styled(
                "pruned by ",
                (str(p["method"]), "bold"),
                f" ({p['scope']}, {rounds}, seed {p['seed']}){took}: "
                f"target {percent(p['target_sparsity'])}, "
                f"achieved {percent(p['achieved_sparsity'])}",
            )
        )
        took = ""  # the time belongs to the pruning, not to the write
    if report.pruning and report.pruning.get("rounds"):
        console.print(rounds_table(report.pruning["rounds"]))
    if report.training:
        if report.training.get("history") and not report.pruning:
            console.print(history_table(report.training["history"]))
        console.print(training_line(report.training))
    if report.output:
        layout = ", bitmask" if report.output.get("layout") == "bitmask" else ""
        console.print(
            f"wrote {report.output['path']} "
            f"({human_size(report.output['file_bytes'])}{layout}){took}"
        )
    for line in export_lines(report):
        console.print(line)
    for check in report.checks:
        verdict = ("passed", "green") if check.passed else ("FAILED", "red")
        console.print(styled(f"check {check.name}: ", verdict, f" — {check.message}"))
    for warning in report.warnings:
        console.print(styled(("warning:", "yellow"), f" {warning}"))
