"""Hostile text: names, paths and values are printed literally, on the line they belong to.

A tensor name, a file name or a metadata value may hold Rich markup (``[/]``), newlines that
forge a ``prunecli:`` line, terminal escapes, carriage returns or bidi overrides. Every command
must print them as escapes (cli/text.py) and exit as it would for a plain name. Also here: the
report is never a reason to fail after an output landed, the --min-sparsity gate counts zeros,
and the counts have upper bounds.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
import torch
from click.testing import Result
from conftest import (
    SMALL_MLP,
    files_in,
    report_of,
    run_refused,
    write_method_inputs,
    write_weights,
    write_zoo,
)
from safetensors.torch import load_file

# Rich markup (a closing tag with nothing to close raised MarkupError: exit 70), a forged line,
# a carriage return, a screen-clearing escape, a C1 control (NEL), a bidi override, U+2028
HOSTILE = "fc[/]\nprunecli: ok\r\x1b[2J\x85\u202e\u2028[bold]x"
NAME = HOSTILE + ".weight"  # ends in `weight`: a prunable tensor of a weights-only file
# how it must be printed, written out by hand
SHOWN = "fc[/]\\nprunecli: ok\\r\\x1b[2J\\x85\\u202e\\u2028[bold]x.weight"
# a file name: no slash, but markup, a newline and an escape
FILE = "o[red]\nprunecli: ok\x1b[2J\u202e.safetensors"
FILE_SHOWN = "o[red]\\nprunecli: ok\\x1b[2J\\u202e.safetensors"


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 columns, so that a layer name is never wrapped and can be searched for whole."""
    monkeypatch.setenv("COLUMNS", "200")


def hostile_model(path: Path) -> Path:
    generator = torch.Generator().manual_seed(0)
    tensors = {
        NAME: torch.randn(8, 12, generator=generator),
        "fc2.weight": torch.randn(4, 8, generator=generator),
    }
    return write_weights(path, tensors, {"note": "\nprunecli: ok", "format": "pt"})


def unsafe_characters(text: str) -> set[str]:
    """Characters that must never reach a terminal raw: controls other than the line break,
    format characters (bidi overrides), line and paragraph separators."""
    return {
        char
        for char in text
        if char != "\n" and unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp")
    }


def assert_literal(result: Result, *shown: str) -> None:
    """Nothing unsafe printed, no forged prunecli line, no traceback; ``shown`` printed."""
    both = result.stdout + result.stderr
    assert unsafe_characters(both) == set(), both
    assert "Traceback" not in both
    assert not any(line.startswith("prunecli:") for line in result.stdout.splitlines())
    ours = [line for line in result.stderr.splitlines() if line.startswith("prunecli:")]
    assert len(ours) <= 1, result.stderr
    assert all(line.startswith(("prunecli: error: ", "prunecli: warning: ")) for line in ours)
    for text in shown:
        assert text in both, (text, both)


def test_inspect_prints_a_hostile_name_literally(cli, workdir: Path, wide: None) -> None:
    model = hostile_model(workdir / "m.safetensors")
    result = cli("inspect", model)
    assert result.exit_code == 0, result.stderr
    assert_literal(result, SHOWN, "fc2.weight")
    layers = report_of(cli("inspect", model, "--json"))["layers"]
    assert NAME in [layer["name"] for layer in layers]


@pytest.mark.parametrize("suffix", [".md", ".html", ".svg", ".json"])
def test_report_files_hold_the_name_literally(cli, workdir: Path, suffix: str) -> None:
    model = hostile_model(workdir / "m.safetensors")
    report = workdir / f"r[b]{suffix}"
    result = cli("inspect", model, "--report", report, "-q")
    assert result.exit_code == 0, result.stderr
    text = report.read_text(encoding="utf-8")
    assert unsafe_characters(text) == set()
    if suffix == ".json":
        assert NAME in [layer["name"] for layer in json.loads(text)["layers"]]
    elif suffix == ".md":  # Markdown escapes too: the name cannot open a link or end the cell
        assert "| fc\\[/\\]\\\\nprunecli: ok\\\\r\\\\x1b\\[2J" in text
        assert not any(line.startswith("prunecli") for line in text.splitlines())
    else:  # Rich's SVG writes spaces as &#160;
        assert "fc[/]\\nprunecli:" in text


def test_prune_to_a_hostile_path_writes_and_says_so(cli, workdir: Path, wide: None) -> None:
    model = hostile_model(workdir / "m[x].safetensors")
    result = cli("prune", model, "-m", "magnitude", "-s", "0.5", "-o", FILE, "--report", "r.md")
    assert result.exit_code == 0, result.stderr
    assert_literal(result, SHOWN, f"wrote {FILE_SHOWN}")
    assert (workdir / FILE).is_file() and (workdir / "r.md").is_file()


def test_prune_dry_run_and_streamed_prune(cli, workdir: Path, wide: None) -> None:
    model = hostile_model(workdir / FILE)
    result = cli("prune", model, "-m", "magnitude", "-s", "0.5", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert_literal(result, SHOWN, "o[red]\\nprunecli:")  # the title may wrap at a space
    # a folder goes the streamed way: its own rendering of the same report
    folder = workdir / "ckpt[x]"
    folder.mkdir()
    shard = "m[x]\nprunecli: ok-00001-of-00001.safetensors"
    hostile_model(folder / shard)
    index = {"metadata": {}, "weight_map": {NAME: shard, "fc2.weight": shard}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    result = cli("prune", folder, "-m", "magnitude", "-s", "0.5", "-o", "out")
    assert result.exit_code == 0, result.stderr
    assert_literal(result, SHOWN, "m[x]\\nprunecli: ok-00001-of-00001.safetensors")


def test_score_and_export_print_the_name_literally(cli, workdir: Path, wide: None) -> None:
    model = hostile_model(workdir / "m.safetensors")
    result = cli("score", model, "-m", "magnitude", "-o", FILE)
    assert result.exit_code == 0, result.stderr
    assert_literal(result, SHOWN, FILE_SHOWN)
    out = "e[red]x.safetensors"
    result = cli("export", model, "--to", "safetensors", "-o", out, "--format", "bitmask")
    assert result.exit_code == 0, result.stderr
    assert_literal(result, SHOWN, out)


def test_retrain_and_init_print_paths_literally(cli, workdir: Path) -> None:
    write_method_inputs(workdir)
    args = ("--data", "data.npz", "--steps", "2", "-o", FILE, "--report", "r[b].md")
    result = cli("retrain", "init.safetensors", *args)
    assert result.exit_code == 0, result.stderr
    assert_literal(result, f"wrote {FILE_SHOWN}")
    result = cli("init", "mlp", "--arch-kwargs", json.dumps(SMALL_MLP), "-o", "i" + FILE)
    assert result.exit_code == 0, result.stderr
    assert_literal(result, f"wrote i{FILE_SHOWN}")


def test_methods_prints_a_plugin_literally(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from prunecli.criteria import list_criteria
    from prunecli.criteria.registry import REGISTRY
    from prunecli.pruning.criterion import Criterion

    list_criteria()  # the built-ins first, then a plug-in with a hostile name and summary

    class Hostile(Criterion):
        name = "evil[/]\nprunecli: ok"
        summary = "scores\x1b[2J\nprunecli: ok [/]"

    monkeypatch.setitem(REGISTRY, Hostile.name, Hostile)
    for columns in ("200", "80"):  # the table, and the narrow listing
        monkeypatch.setenv("COLUMNS", columns)
        result = cli("methods")
        assert result.exit_code == 0, result.stderr
        assert_literal(result, "evil[/]\\nprunecli: ok", "magnitude")


def test_error_lines_cannot_be_forged(cli, workdir: Path) -> None:
    # a path in the error line
    run_refused(cli, workdir, ("inspect", "x\nprunecli: ok\x1b[2J"), 2, "x\\nprunecli: ok\\x1b")
    # a metadata value in the hint line (it used to print a second, forged line there)
    model = write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    metadata = {"prunecli.arch": "evil.mod:f\nprunecli: ok"}
    write_weights(workdir / "n.safetensors", load_file(str(model)), metadata)
    result = run_refused(cli, workdir, ("prune", "n.safetensors", "-m", "synflow", "-s", "0.5"), 3)
    assert_literal(result, "evil.mod:f\\nprunecli: ok")
    assert len(result.stderr.splitlines()) == 2
    # a value quoted by the option parser
    result = run_refused(cli, workdir, ("inspect", "m.safetensors", "--x\nprunecli: ok"), 2)
    assert_literal(result, "No such option: --x\\")  # Click escapes it as \x0a


def test_a_report_that_fails_after_the_output_landed_is_not_a_failure(
    cli, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prunecli.cli.output as output

    def broken(console, report, group) -> None:  # noqa: ANN001 - a rendering bug, simulated
        raise RuntimeError("rendering bug")

    model = write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    monkeypatch.setattr(output, "render_report", broken)
    result = cli("prune", model, "-m", "magnitude", "-s", "0.5", "-o", "p.safetensors")
    assert result.exit_code == 0, result.stderr
    assert (workdir / "p.safetensors").is_file()
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("prunecli: warning: wrote p.safetensors")
    assert "rendering bug" in lines[0] and result.stdout == ""
    # nothing landed: the same bug is an internal error, and no report file is left behind
    before = files_in(workdir)
    result = cli("inspect", model, "--report", "r.html")
    assert result.exit_code == 70 and "rendering bug" in result.stderr
    assert files_in(workdir) == before


def write_832(path: Path) -> Path:
    """832 prunable weights (32×26): round(0.95 · 832) = 790 zeros is 94.95% sparse."""
    generator = torch.Generator().manual_seed(0)
    tensors = {"fc.weight": torch.randn(32, 26, generator=generator), "fc.bias": torch.ones(32)}
    return write_weights(path, tensors)


def test_a_model_pruned_to_s_passes_min_sparsity_s(cli, workdir: Path) -> None:
    write_832(workdir / "m.safetensors")
    result = cli("prune", "m.safetensors", "-m", "magnitude", "-s", "0.95", "-o", "p.safetensors")
    assert result.exit_code == 0, result.stderr
    result = cli("inspect", "p.safetensors", "--min-sparsity", "0.95", "--json")
    assert result.exit_code == 0, result.stderr
    (check,) = report_of(result)["checks"]
    assert check["passed"] is True and check["value"] == pytest.approx(790 / 832)
    assert cli("inspect", "p.safetensors", "--min-sparsity", "95%", "-q").exit_code == 0
    # one zero fewer: 789 < 790, exit 1
    tensors = load_file(str(workdir / "p.safetensors"))
    weight = tensors["fc.weight"].flatten()
    assert int((weight == 0).sum()) == 790
    weight[int((weight == 0).nonzero()[0])] = 1.0
    tensors["fc.weight"] = weight.reshape(32, 26)
    write_weights(workdir / "q.safetensors", tensors)
    result = cli("inspect", "q.safetensors", "--min-sparsity", "0.95")
    assert result.exit_code == 1
    assert "789 of 832 weights are zero, 790 needed" in result.stderr


@pytest.mark.parametrize("scope", ["global", "layer", "erk"])
# S · 126 = 12.6, 63, 97.02, 113.4, 125.874: 0.77 and 0.9 round down (and used to fail)
@pytest.mark.parametrize("sparsity", ["0.1", "0.5", "0.77", "0.9", "0.999"])
def test_every_pruned_sparsity_passes_its_own_gate(
    cli, workdir: Path, scope: str, sparsity: str
) -> None:
    write_zoo(workdir / "m.safetensors", "mlp", {"widths": [13, 7, 5]})  # 91 + 35 weights
    args = ("-m", "random", "-s", sparsity, "--scope", scope, "-o", "p.safetensors", "-q")
    assert cli("prune", "m.safetensors", *args).exit_code == 0
    assert cli("inspect", "p.safetensors", "--min-sparsity", sparsity, "-q").exit_code == 0


@pytest.mark.parametrize(
    "args, limit",
    [
        (
            ("prune", "m.safetensors", "-m", "synflow", "-s", "0.5", "--iterations", "10**9"),
            "10000",
        ),
        (
            ("prune", "m.safetensors", "-m", "random", "-s", "0.5", "--iterations", "10**20"),
            "10000",
        ),
        (("retrain", "m.safetensors", "--data", "data.npz", "--epochs", "10**9"), "100000"),
        (("retrain", "m.safetensors", "--data", "data.npz", "--steps", "10**20"), "100000000"),
        (("prune", "m.safetensors", "-m", "snip", "-s", "0.5", "--batches", "10**9"), "100000"),
        (("prune", "m.safetensors", "-m", "kstarts", "-s", "0.5", "--starts", "10**6"), "1000"),
        (
            ("retrain", "m.safetensors", "--data", "d", "--steps", "1", "--num-classes", "10**12"),
            "1000000",
        ),
    ],
)
def test_absurd_counts_are_refused(cli, workdir: Path, args: tuple[str, ...], limit: str) -> None:
    write_method_inputs(workdir)
    write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    args = tuple(str(eval(a)) if "**" in a else a for a in args)  # noqa: S307 - literals above
    result = run_refused(cli, workdir, args, 2, limit)
    assert len(result.stderr.splitlines()) == 2


def test_the_limits_themselves_are_accepted(cli, workdir: Path) -> None:
    write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    args = ("-m", "random", "-s", "0.5", "--iterations", "10000", "--dry-run")
    assert cli("prune", "m.safetensors", *args).exit_code == 0
