"""The Typer application: it only assembles the commands."""

from __future__ import annotations

import inspect as inspect_module
from typing import Annotated

import typer

import prunecli
from prunecli.cli import export, init, inspect, methods, prune, retrain, score

app = typer.Typer(
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
    ("export", export.export_command),
    ("methods", methods.methods_command),
    ("init", init.init_command),
):
    app.command(_name, help=_reflowed(_command.__doc__))(_command)


def _version(value: bool) -> None:
    if value:
        print(f"prunecli {prunecli.__version__}")
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
    app()
