"""The Typer application: it only assembles the commands."""

from __future__ import annotations

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
app.command("inspect")(inspect.inspect_command)
app.command("score")(score.score_command)
app.command("prune")(prune.prune_command)
app.command("retrain")(retrain.retrain_command)
app.command("export")(export.export_command)
app.command("methods")(methods.methods_command)
app.command("init")(init.init_command)


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
