"""`prune --help` groups its options in panels; each method option is declared once, on its
criterion (``Criterion.options``), and a method option the chosen method does not take is refused
before anything is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from prunecli.cli.app import app
from prunecli.criteria import list_criteria
from tests.conftest import run_refused, write_method_inputs

PANELS = (
    "What and how much",
    "Allocation and schedule",
    "Model",
    "Output",
    "Data and device",
    "Training",
    "SNIP / GraSP",
    "NPB (node-path balancing)",
    "Lottery tickets (imp)",
    "IHT / BiNGO / k-starts / dissipating",
    "SparseGPT",
    "OWL (--scope owl: wanda, sparsegpt)",
)


def flags(command: str) -> list[str]:
    """Every flag of ``command`` (long and short), from the command Typer builds."""
    built = typer.main.get_command(app).commands[command]
    return [f for p in built.params if p.param_type_name == "option" for f in p.opts]


def panels(text: str) -> dict[str, str]:
    """The help's boxes by title: ``{"Output": "│ --output -o …", …}``."""
    boxes: dict[str, str] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("╭─ "):
            title = line.strip("╭─╮ ").rstrip("─ ")
            boxes[title] = ""
        elif line.startswith("╰"):
            title = None
        elif title is not None:
            boxes[title] += line + "\n"
    return boxes


@pytest.mark.parametrize("columns", [80, 100])
def test_prune_help_shows_the_panels_and_every_option(cli, monkeypatch, columns: int) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    result = cli("prune", "--help")
    assert result.exit_code == 0, result.stderr
    boxes = panels(result.stdout)
    assert [title for title in boxes if title in PANELS] == list(PANELS)
    assert max(len(line) for line in result.stdout.splitlines()) <= columns
    words = result.stdout.replace("│", " ").split()
    missing = [flag for flag in flags("prune") if flag not in words]
    assert not missing, missing
    # a method's options in its family's box
    assert "--alpha" in boxes["NPB (node-path balancing)"].split()
    assert "--rewind-step" in boxes["Lottery tickets (imp)"].split()
    assert "--rewind-to" in boxes["Lottery tickets (imp)"].split()  # retrain: in Training
    assert "--start-sparsity" in boxes["IHT / BiNGO / k-starts / dissipating"].split()
    assert "--epochs" in boxes["Training"].split()
    assert "--sparsity" in boxes["What and how much"].split()


@pytest.mark.parametrize("command", ["score", "retrain"])
def test_score_and_retrain_share_the_panels(cli, monkeypatch, command: str) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    result = cli(command, "--help")
    assert result.exit_code == 0, result.stderr
    boxes = panels(result.stdout)
    assert {"Model", "Output", "Data and device"} <= set(boxes)
    words = result.stdout.replace("│", " ").split()
    assert not [flag for flag in flags(command) if flag not in words]
    assert "--data" in boxes["Data and device"].split()
    assert "--group" in boxes["Output"].split() or command == "retrain"
    assert ("--rewind-to" in boxes.get("Training", "").split()) == (command == "retrain")


def test_every_declared_option_is_a_prune_option_in_a_method_panel(cli, monkeypatch) -> None:
    # declared once: each criterion's options are flags of `prune`, and each option of a method
    # panel is declared by some criterion
    monkeypatch.setenv("COLUMNS", "200")
    boxes = panels(cli("prune", "--help").stdout)
    in_method_panels = {
        word
        for title in PANELS[6:]
        for word in boxes[title].replace("│", " ").split()
        if word.startswith("--")
    }
    declared = {
        "--" + name.replace("_", "-") for criterion in list_criteria() for name in criterion.options
    }
    # --batch-size is also training's; --samples, --seq-len: the calibration data's, with --data
    assert declared - {"--batch-size", "--samples", "--seq-len"} == in_method_panels
    assert declared <= set(flags("prune"))


@pytest.fixture
def setup(workdir: Path) -> Path:
    return write_method_inputs(workdir)


TRAIN = ("--data", "data.npz", "--steps", "4", "--batch-size", "40")


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (
            ("prune", "init.safetensors", "-m", "magnitude", "-s", "0.5", "--alpha", "0.1"),
            "--alpha is an option of npb, not of --method magnitude",
            "see `prunecli methods`",
        ),
        (
            ("prune", "init.safetensors", "-m", "snip", "-s", "0.5", "--data", "data.npz",
             "--temperature", "2"),
            "--temperature is an option of grasp, not of --method snip",
            "see `prunecli methods`",
        ),
        (
            ("prune", "init.safetensors", "-m", "imp", "-s", "0.5", *TRAIN, "--gamma", "0.1"),
            "--gamma is an option of dissipating and kstarts+dissipating, not of --method imp",
            "see `prunecli methods`",
        ),
        (
            ("prune", "init.safetensors", "-m", "iht", "-s", "0.5", *TRAIN, "--batches", "2"),
            "--batches is an option of grasp, snip and taylor, not of --method iht",
            "see `prunecli methods`",
        ),
        (
            ("prune", "init.safetensors", "-m", "random", "-s", "0.5", "--batch-size", "8"),
            "--batch-size is an option of grasp, snip, taylor and the training methods, "
            "not of --method random",
            "see `prunecli methods`",
        ),
        (
            ("prune", "init.safetensors", "-m", "magnitude", "-s", "0.5", "--rate", "0.5"),
            "--rate is an option of a training method (imp), not of --method magnitude",
            "see `prunecli methods`",
        ),
        (
            ("prune", "init.safetensors", "-m", "random", "-s", "0.5", "--epochs", "2"),
            "--epochs is an option of a training method: training methods are bingo, ",
            "prunecli retrain",
        ),
        (
            ("prune", "init.safetensors", "--scores", "init.safetensors", "-s", "0.5",
             "--max-p", "2"),
            "--max-p is an option of npb, not of --scores",
            "see `prunecli methods`",
        ),
        (
            ("score", "init.safetensors", "-m", "magnitude", "--batches", "2"),
            "--batches is an option of grasp, snip and taylor, not of --method magnitude",
            "see `prunecli methods`",
        ),
    ],
)  # fmt: skip
def test_a_method_option_of_another_method_is_refused(
    cli, setup: Path, args: tuple[str, ...], message: str, hint: str
) -> None:
    run_refused(cli, setup, (*args, "-o", "out.safetensors"), 2, message, hint)


def test_prunecli_methods_lists_each_methods_options(cli) -> None:
    import json

    result = cli("methods", "--json")
    assert result.exit_code == 0
    by_name = {m["name"]: m for m in json.loads(result.stdout)["methods"]}
    assert by_name["npb"]["options"] == ["--alpha", "--beta", "--max-p"]
    assert by_name["magnitude"]["options"] == []
    assert "--start-sparsity" in by_name["kstarts+dissipating"]["options"]
