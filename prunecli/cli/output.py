"""The one output object: every command hands it results; it renders human, JSON or nothing.

Data goes to stdout, everything else to stderr; when the model bytes go to stdout (``-o -``) the
report moves to stderr. Rich decides colour itself (no colour off a terminal or with NO_COLOR).
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from prunecli.cli.text import DataConsole, markdown_cell, printable, styled
from prunecli.cli.training_view import (
    history_table,
    rounds_table,
    training_line,
    training_markdown,
)
from prunecli.errors import BadInput
from prunecli.io.paths import Target, atomic_output, stdout_errors

if TYPE_CHECKING:
    from prunecli.core.report import Report

_BAR_WIDTH = 10
REPORT_SUFFIXES = (".json", ".md", ".svg", ".html")


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
    if report.pruning:
        lines += ["", "```json", json.dumps(report.pruning, indent=2), "```"]
    lines += training_markdown(report.training, None)
    if report.export:
        lines += ["", *[f"- {markdown_cell(line)}" for line in export_lines(report)]]
    lines += [
        f"- {markdown_cell(c.name)}: {'passed' if c.passed else 'FAILED'} — "
        f"{markdown_cell(c.message)}"
        for c in report.checks
    ]
    lines += [f"- warning: {markdown_cell(w)}" for w in report.warnings]
    return "\n".join(lines) + "\n"


class _Console(DataConsole):
    def on_broken_pipe(self) -> None:
        """Rich exits 1 (\"a check failed\") when the reader goes away: let cli/errors.py give
        the shell's code for a broken pipe instead."""
        self.quiet = True
        raise BrokenPipeError


class Output:
    """Renders results for one command run: human (Rich), ``--json``, or ``-q``.

    Everything is rendered in memory first and written in one piece, so a rendering failure
    never leaves half a report behind; names and paths are printed literally (cli/text.py)."""

    def __init__(
        self, json_mode: bool = False, quiet: bool = False, data_to_stderr: bool = False
    ) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        stream = sys.stderr if data_to_stderr else sys.stdout
        self.console = _Console(file=stream, soft_wrap=False)
        self.err = DataConsole(file=sys.stderr)

    def document(self, doc: dict[str, Any], human: Callable[[Console], None]) -> None:
        if not self.quiet:
            self._write(self._rendered(doc, human))

    def _rendered(self, doc: dict[str, Any], human: Callable[[Console], None]) -> str:
        if self.json_mode:
            return json.dumps(doc, indent=2) + "\n"
        with self.console.capture() as captured:
            human(self.console)
        return captured.get()

    def _write(self, text: str) -> None:
        # a stream that cannot encode a character (PYTHONIOENCODING=ascii, a latin-1 terminal)
        # gets it as an escape, as stderr does, rather than a UnicodeEncodeError (exit 70)
        encoding = getattr(self.console.file, "encoding", None)
        if encoding:
            text = text.encode(encoding, "backslashreplace").decode(encoding)
        with stdout_errors() if self.console.file is not sys.stderr else nullcontext():
            self.console.file.write(text)
            self.console.file.flush()

    def report(self, report: Report, save_to: Path | None = None) -> None:
        """Show ``report`` and save it to ``save_to``, both rendered before either is written.

        A command that wrote an output calls this after the output landed. If rendering then
        fails (a bug: data cannot make it fail), the run is not reported as failed — the
        output is complete — but a warning says the report is missing (docs/exit-codes.md)."""
        try:
            saved = None if save_to is None else report_bytes(report, save_to)
            shown = None
            if not self.quiet:
                shown = self._rendered(report.to_json(), lambda c: render_report(c, report))
        except Exception as exc:  # noqa: BLE001 - only after an output landed, see below
            landed = landed_output(report)
            if landed is None:
                raise  # nothing was written: an internal error like any other (exit 70)
            _report_not_rendered(landed, save_to, exc)
            return
        if saved is not None and save_to is not None:
            with atomic_output(str(save_to)) as stream:
                stream.write(saved)
        if shown is not None:
            self._write(shown)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.err.print(styled(("warning:", "yellow"), f" {message}"))

    @contextmanager
    def progress(
        self, description: str, total: int, force: bool = False
    ) -> Iterator[Callable[..., None]]:
        """A progress bar on stderr when it is a terminal (or ``force``); a no-op otherwise.

        The callback takes ``(done, total)`` and optionally a dict of figures shown beside the
        bar (training: loss, accuracy, and a ``label`` such as the round)."""
        if self.quiet or (not force and (not self.err.is_terminal or os.environ.get("NO_COLOR"))):
            yield lambda done, total, info=None: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            # markup off: the description and the figures are text, never Rich markup
            TextColumn("{task.description}", style="progress.description", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}", markup=False),
            console=self.err,
            transient=True,
        ) as bar:
            task = bar.add_task(printable(description), total=total, info="")

            def update(done: int, total: int, info: dict[str, Any] | None = None) -> None:
                bar.update(task, completed=done, total=total, info=progress_info(info))

            yield update


def landed_output(report: Report) -> str | None:
    """The path of the output this command has already written (``-`` for stdout), if any."""
    if report.output and report.output.get("path") is not None:
        return str(report.output["path"])
    if report.export and report.export.get("written"):
        return str(report.export["path"])
    return None


def _report_not_rendered(output: str, save_to: Path | None, exc: Exception) -> None:
    """The output landed, its report did not render: say so on stderr; the run still succeeds."""
    if os.environ.get("PRUNECLI_DEBUG") == "1":
        import traceback

        traceback.print_exc()
    missing = f" and --report {save_to} was not written" if save_to is not None else ""
    print(
        printable(
            f"prunecli: warning: wrote {output}, but its report could not be shown{missing} "
            f"(internal error: {type(exc).__name__}: {exc})"
        ),
        file=sys.stderr,
    )
    print(
        "  hint: the output is complete; rerun with PRUNECLI_DEBUG=1 for a traceback and report it",
        file=sys.stderr,
    )


def render_plan(console: Console, plan: dict[str, Any]) -> None:
    """``prune --dry-run``: the tensors that would be pruned, and those left dense."""
    table = Table(title=f"would prune {plan['model']} ({plan['method']}, {plan['scope']})")
    for column in ("tensor", "shape", "dtype", "parameters", "action"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for action, key in (("prune", "prunable"), ("dense", "dense")):
        for entry in plan[key]:
            shape = "×".join(map(str, entry["shape"]))
            table.add_row(entry["name"], shape, entry["dtype"], f"{entry['params']:,}", action)
    console.print(table)
    totals = plan["totals"]
    console.print(
        f"{totals['prunable_params']:,} of {totals['all_params']:,} parameters prunable; "
        f"target sparsity {percent(plan['sparsity'])}; nothing was written"
    )


def progress_info(info: dict[str, Any] | None) -> str:
    """``{"loss": 0.41, "accuracy": 0.87, "label": "round 2/9"}`` → ``round 2/9 loss 0.410 acc 87.0%``."""
    if not info:
        return ""
    parts = [str(info["label"])] if info.get("label") else []
    if "loss" in info:
        parts.append(f"loss {info['loss']:.3f}")
    if "accuracy" in info:
        parts.append(f"acc {info['accuracy']:.1%}")
    return " ".join(parts)


def check_report(path: Path | None, curve: bool = False) -> list[Target]:
    """Refuse a ``--report`` of an unknown kind before any work; the report's path as a target
    for io.paths.check_outputs (empty without ``--report``).

    ``curve``: the run has rounds (a training method), so .svg and .png draw accuracy against
    sparsity (cli/curve.py)."""
    if path is None:
        return []
    suffix = path.suffix.lower()
    if suffix == ".png" and not curve:
        raise BadInput(
            f"--report {path}: a .png report draws the rounds of a training method (e.g. imp)",
            "use .json, .md, .svg or .html",
        )
    if suffix not in REPORT_SUFFIXES and suffix != ".png":
        raise BadInput(f"--report {path}: unknown report format", "use .json, .md, .svg or .html")
    return [Target(str(path), "--report")]


def read_paths(
    model: str, data: str | None = None, **options: object
) -> list[tuple[str, str | None]]:
    """What a command reads, for io.paths.check_outputs: the model, a ``--data`` that names a
    path (not a built-in data set), and the file options given as ``rewind_to=...``."""
    from prunecli.data import BUILTINS

    reads: list[tuple[str, str | None]] = [("input", model)]
    if data is not None and data not in BUILTINS:
        reads.append(("--data", data))
    for name, value in options.items():
        reads.append((f"--{name.replace('_', '-')}", str(value) if value else None))
    return reads


def save_report(report: Report, path: Path) -> None:
    data = report_bytes(report, path)
    with atomic_output(str(path)) as stream:
        stream.write(data)


def report_bytes(report: Report, path: Path) -> bytes:
    """The ``--report`` file's contents for ``path``'s suffix, rendered in memory."""
    suffix = path.suffix.lower()
    rounds = (report.pruning or {}).get("rounds")
    if rounds and suffix in (".svg", ".png"):
        from prunecli.cli.curve import curve_png, curve_svg

        title = f"{printable(report.pruning['method'])}: test accuracy against sparsity"
        return curve_svg(rounds, title).encode() if suffix == ".svg" else curve_png(rounds, title)
    if suffix == ".json":
        text = json.dumps(report.to_json(), indent=2) + "\n"
    elif suffix == ".md":
        text = report_markdown(report)
    elif suffix in (".svg", ".html"):
        recorder = DataConsole(record=True, file=io.StringIO(), width=120, force_terminal=True)
        render_report(recorder, report)
        text = recorder.export_svg(title="prunecli") if suffix == ".svg" else recorder.export_html()
    else:
        raise BadInput(f"--report {path}: unknown report format", "use .json, .md, .svg or .html")
    return text.encode("utf-8")
