"""The Typer application: it only assembles the commands."""

from __future__ import annotations

import inspect as inspect_module
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from prunecli.cli import evaluate, export, init, inspect, methods, prune, retrain, score, sweep
from prunecli.cli.errors import install_signal_handlers, interrupt_code, interrupted
from prunecli.cli.text import printable
from prunecli.version import __version__


class _OneLineErrors(TyperGroup):
    """Usage errors (an unknown option, a value of the wrong type, a missing argument) in the
    project's own two lines on stderr, exit 2, instead of Click's boxed usage block (DESIGN §1)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
            code = result if isinstance(result, int) else 0  # an Exit's code, or a return
        except typer.TyperException as exc:  # Click's exceptions (Typer vendors Click)
            message = exc.format_message()
            usage = getattr(exc, "ctx", None)  # only usage errors carry their context
            if message:  # empty when a bare command printed its help instead
                # the values quoted in it are the user's: printed literally, on one line
                print(f"prunecli: error: {printable(message)}", file=sys.stderr)
                if usage is not None:
                    hint = printable(f"see '{usage.command_path} --help'")
                    print(f"  hint: {hint}", file=sys.stderr)
            code = exc.exit_code
        except typer.Abort as exc:  # Click's word for Ctrl-C (or a signal) outside a command
            cause = exc.__cause__
            if isinstance(cause, KeyboardInterrupt):
                print(f"prunecli: error: {interrupted(cause)}", file=sys.stderr)
                code = interrupt_code(cause)
            else:
                print("prunecli: error: aborted; nothing was written", file=sys.stderr)
                code = 1
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_OneLineErrors,
    name="prunecli",
    help="Prune saved neural-network models and report what was done.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _reflowed(doc: str | None) -> str:
    """A command's docstring as help text: the lines of each prose paragraph joined, so the
    terminal wraps it (Typer keeps the source's line breaks); indented examples stay as written."""
    paragraphs = inspect_module.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(
        p if any(line.startswith(" ") for line in p.splitlines()) else " ".join(p.split("\n"))
        for p in paragraphs
    )


for _name, _command in (
    ("inspect", inspect.inspect_command),
    ("score", score.score_command),
    ("prune", prune.prune_command),
    ("retrain", retrain.retrain_command),
    ("eval", evaluate.eval_command),
    ("sweep", sweep.sweep_command),
    ("export", export.export_command),
    ("methods", methods.methods_command),
    ("init", init.init_command),
):
    app.command(_name, help=_reflowed(_command.__doc__))(_command)


def _version(value: bool) -> None:
    if value:
        print(f"prunecli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = None,
) -> None:
    """Prune saved neural-network models and report what was done."""


def main() -> None:
    install_signal_handlers()
    app()
