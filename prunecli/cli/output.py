"""The one output object: every command hands it results; it renders human, JSON or nothing.

Data goes to stdout, everything else to stderr; when the model bytes go to stdout (``-o -``) the
report moves to stderr. Rich decides colour itself (no colour off a terminal or with NO_COLOR).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from prunecli.cli.report_files import report_bytes
from prunecli.cli.report_view import percent, render_report
from prunecli.cli.text import DataConsole, printable, styled
from prunecli.io.atomic import atomic_output, stdout_errors

if TYPE_CHECKING:
    from prunecli.jobs.report import Report


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
        self,
        json_mode: bool = False,
        quiet: bool = False,
        data_to_stderr: bool = False,
        group: str = "auto",
    ) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.group = group  # the layer rows of a report: auto, block or tensor (cli/blocks.py)
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
            saved = None if save_to is None else report_bytes(report, save_to, self.group)
            shown = None
            if not self.quiet:
                shown = self._rendered(
                    report.to_json(), lambda c: render_report(c, report, self.group)
                )
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
