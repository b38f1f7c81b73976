"""`prunecli methods`: the registered criteria, what each needs, and its defaults."""

from __future__ import annotations

from prunecli.cli import options as opt
from prunecli.cli.errors import handle_errors
from prunecli.cli.output import Output


@handle_errors
def methods_command(json_mode: opt.Json = False, quiet: opt.Quiet = False) -> None:
    """List the pruning criteria: name, what each needs, default rounds and scope, options.

    Needs: weights (any model file), graph (the architecture: prunecli's metadata, --arch, a
    Hugging Face config.json or a .pt2 program), input_shape (known with the graph, else
    --input-shape), data (--data) and training (the training options of `retrain`). Options: the
    method's own options (`prune` and `score` refuse a method option the method does not take).

    Examples:

      prunecli methods

      prunecli methods --json
    """
    from rich.table import Table
    from rich.text import Text

    from prunecli.cli.text import styled
    from prunecli.criteria import list_criteria
    from prunecli.jobs.validate import flag

    rows = [
        {
            "name": c.name,
            "needs": list(c.needs),
            "default_iterations": c.default_iterations,
            "default_scope": c.default_scope,
            "summary": c.summary,
            "options": [flag(name) for name in c.options],
        }
        for c in list_criteria()
    ]

    def human(console) -> None:
        if console.width >= 120:
            table = Table(header_style="bold")
            for column in ("method", "needs", "rounds", "scope", "what it scores"):
                table.add_column(column)
            for row in rows:
                table.add_row(row["name"], *_about(row), _described(row))
            console.print(table)
            return
        # narrower (80 columns: pipes, CI logs): the name whole, its facts and summary beside it
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True, style="bold")
        grid.add_column()
        for row in rows:
            needs, rounds, scope = _about(row)
            noun = "round" if rounds == "1" else "rounds"
            facts = styled(f"needs {needs}; {rounds} {noun}, {scope}")
            grid.add_row(row["name"], Text("\n").join([facts, _described(row, "dim")]))
        console.print(grid)

    Output(json_mode, quiet).document({"schema": "prunecli.methods/1", "methods": rows}, human)


def _about(row: dict) -> tuple[str, str, str]:
    """(needs, default rounds, default scope) as shown."""
    return ", ".join(row["needs"]), str(row["default_iterations"]), row["default_scope"]


def _described(row: dict, style: str = ""):  # noqa: ANN202 - a rich Text (imported late)
    """The summary, and the method's options on a line of their own."""
    from rich.text import Text

    from prunecli.cli.text import styled

    lines = [styled((row["summary"], style))]
    if row["options"]:
        lines.append(styled((f"options: {' '.join(row['options'])}", "dim")))
    return Text("\n").join(lines)
