"""`prunecli methods`: the registered criteria, what each needs, and its defaults."""

from __future__ import annotations

from prunecli.cli import options as opt
from prunecli.cli.errors import handle_errors
from prunecli.cli.output import Output


@handle_errors
def methods_command(json_mode: opt.Json = False, quiet: opt.Quiet = False) -> None:
    """List the pruning criteria: name, what each needs, default rounds and scope.

    Examples:

      prunecli methods

      prunecli methods --json
    """
    from rich.table import Table

    from prunecli.criteria import list_criteria

    rows = [
        {
            "name": c.name,
            "needs": list(c.needs),
            "default_iterations": c.default_iterations,
            "default_scope": c.default_scope,
            "summary": c.summary,
        }
        for c in list_criteria()
    ]

    def human(console) -> None:
        table = Table(header_style="bold")
        for column in ("method", "needs", "rounds", "scope", "what it scores"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["name"],
                ", ".join(row["needs"]),
                str(row["default_iterations"]),
                row["default_scope"],
                row["summary"],
            )
        console.print(table)

    Output(json_mode, quiet).document({"schema": "prunecli.methods/1", "methods": rows}, human)
