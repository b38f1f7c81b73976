"""How a Report looks on a terminal: the layer table, its summary lines and their formatting."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from prunecli.cli.report_tables import layer_tables, mixed_dtypes, percent
from prunecli.cli.text import styled
from prunecli.cli.training_view import history_table, rounds_table, structure_table, training_line

if TYPE_CHECKING:
    from prunecli.jobs.report import Report


def human_size(nbytes: int | None) -> str:
    if nbytes is None or nbytes < 0:
        return "?"
    size = float(nbytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


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


def cost_line(report: Report) -> str | None:
    """Parameters and MACs; ``before → after`` for `prune`, the ratio to a recorded original
    for `inspect`; MACs "—" with the reason when the graph is unknown."""
    from prunecli.jobs.gates import short_count

    cost = report.cost
    if not cost:
        return None
    original = cost["original"] or {}

    def count(value: int | None) -> str:
        return "—" if value is None else short_count(value)

    def times(ratio: float | None, of: str = "") -> str:
        return "" if ratio is None else f" ({ratio:.2f}×{of})"

    if original.get("source") == "input":  # prune: its input → its output
        params = f"parameters {original['params']:,} → {cost['params']:,}"
        params += times(cost["params_ratio"])
        macs = f"MACs {count(original['macs'])} → {count(cost['macs'])}"
        macs += times(cost["macs_ratio"])
    else:
        params = f"{cost['params']:,} parameters"
        params += times(cost["params_ratio"], f" the original's {original.get('params', 0):,}")
        macs = f"{count(cost['macs'])} MACs" + times(cost["macs_ratio"], " the original")
    counted = cost["macs_input"]
    if not counted:
        where = f" ({cost['macs_note']})"
    elif "hf_architecture" in report.model:  # token ids
        where = f" per sequence of {counted[-1]} tokens"
    else:
        where = f" per {'×'.join(map(str, counted))} input"
    return f"cost: {params}, {macs}{where}"


def quality_value(entry: dict[str, Any]) -> str:
    """One figure of the ``quality`` block as people read it; with ``before`` (``--eval`` on
    prune and retrain): ``97.2% → 95.8% (−1.4 pts)``."""
    value, metric = entry["value"], entry["metric"]
    if "before" in entry:
        before, difference = entry["before"], entry["difference"]
        sign = "−" if difference < 0 else "+"
        if metric == "accuracy":
            change = f"{sign}{abs(difference) * 100:.2f} pts"
            return f"{percent(before)} → {percent(value)} ({change})"
        return f"{before:.6g} → {value:.6g} ({sign}{abs(difference):.4g})"
    if metric in ("accuracy", "top1_agreement"):
        return percent(value)
    if metric == "latency_ms":
        text = (
            f"{value:.3f} ms median (min {entry['min']:.3f}, quartiles {entry['q1']:.3f}–"
            f"{entry['q3']:.3f}, max {entry['max']:.3f})"
        )
        if entry.get("speedup") is not None:
            text += (
                f"; the reference {entry['reference']['value']:.3f} ms: "
                f"{entry['speedup']:.2f}× speed-up"
            )
        return text
    return f"{value:.6g}"


# metric keys as people read them; others read with their underscores as spaces
METRIC_LABELS = {"latency_ms": "latency", "top1_agreement": "top-1 agreement"}


def quality_lines(report: Report) -> list[str]:
    """``eval``'s figures, one line each, with the protocol that produced them."""
    entries = list((report.quality or {}).values())
    lines = []
    for index, entry in enumerate(entries):
        label = METRIC_LABELS.get(entry["metric"], entry["metric"].replace("_", " "))
        line = f"{label}: {quality_value(entry)}"
        following = entries[index + 1]["protocol"] if index + 1 < len(entries) else None
        if entry["protocol"] != following:  # figures of one protocol state it once, last
            line += f" — {entry['protocol']}"
        lines.append(line)
    return lines


def export_lines(report: Report) -> list[str]:
    """The `export` section in a few plain lines: artifact, sizes, zeros, notes."""
    export = report.export
    if not export:
        return []
    about = [export["storage"].replace("-", " ")]
    if export["opset"]:
        about.append(f"opset {export['opset']}")
    if export["format"] != "safetensors":
        free = {name for axes in export["dynamic_axes"].values() for name in axes.values()}
        about.append(f"dynamic {', '.join(sorted(free))}" if free else "fixed shape")
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


def graph_line(graph: dict[str, Any]) -> str:
    """``input: input float32 [batch, 1, 28, 28] -> output: linear_2 float32 [batch, 10]``."""

    def values(kind: str) -> str:
        shown = [
            f"{v['name']} {v['dtype']} [{', '.join('?' if d is None else str(d) for d in v['shape'])}]"
            for v in graph[kind]
        ]
        return f"{kind[:-1]}{'s' if len(shown) > 1 else ''}: {'; '.join(shown) or 'none'}"

    return f"{values('inputs')} -> {values('outputs')}"


def render_report(console: Console, report: Report, group: str = "auto") -> None:
    """The report for a terminal; ``group`` (auto, block, tensor) picks the layer rows."""
    model = report.model
    arch = model["arch"] or model.get("hf_architecture") or "weights only"
    about = [model["format"], arch, human_size(model["file_bytes"])]
    if report.layers and not mixed_dtypes(report):
        about.append(report.layers[0].dtype)
    console.print(styled((str(model["path"]), "bold"), "  ", " · ".join(map(str, about))))
    for table in layer_tables(report, console, group):
        console.print(table)
    console.print(
        f"all tensors: {report.all_params:,} parameters, {report.all_nonzero:,} non-zero "
        f"({percent(1 - report.all_nonzero / max(report.all_params, 1))} sparse)"
    )
    cost = cost_line(report)
    if cost is not None:
        console.print(cost)
    line = topology_line(report)
    if line is not None:
        console.print(line)
    if model.get("graph"):
        console.print(graph_line(model["graph"]))
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
    if report.structure:
        console.print(structure_table(report.structure))
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
    for line in quality_lines(report):
        console.print(styled(line))
    for check in report.checks:
        verdict = ("passed", "green") if check.passed else ("FAILED", "red")
        console.print(styled(f"check {check.name}: ", verdict, f" — {check.message}"))
    for warning in report.warnings:
        console.print(styled(("warning:", "yellow"), f" {warning}"))
