"""`--eval DATA` on prune and retrain: the figures before and after equal `prunecli eval` of the
input and of the written output, run separately; the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import (
    files_in,
    report_of,
    run_refused,
    write_calibrated_llama,
    write_llama,
    write_weights,
    write_zoo,
)
from safetensors.torch import load, load_file, save_file

DIGITS_MLP = {"widths": [64, 16, 10]}


@pytest.fixture
def mlp(workdir: Path) -> Path:
    return write_zoo(workdir / "mlp.safetensors", "mlp", DIGITS_MLP)


def evaluated(cli, model: Path | str) -> dict:  # noqa: ANN001
    """`prunecli eval MODEL --data digits`: metric → value."""
    result = cli("eval", model, "--data", "digits", "--json")
    assert result.exit_code == 0, result.stderr
    return {name: entry["value"] for name, entry in report_of(result)["quality"].items()}


def check_against_eval(cli, quality: dict, before: Path, after: Path) -> None:  # noqa: ANN001
    """before = eval of the input file, after = eval of the output file, difference = after − before."""
    was, now = evaluated(cli, before), evaluated(cli, after)
    assert set(quality) == {"accuracy", "cross_entropy"} == set(was)
    for name, entry in quality.items():
        assert entry["before"] == pytest.approx(was[name], rel=1e-6, abs=1e-12)
        assert entry["after"] == entry["value"] == pytest.approx(now[name], rel=1e-6, abs=1e-12)
        assert entry["difference"] == entry["after"] - entry["before"]
        assert entry["samples"] == 360 and entry["split"] == "test"


def test_retrain_eval_is_eval_before_and_after(cli, mlp: Path) -> None:
    args = (
        "retrain",
        mlp,
        "--data",
        "digits",
        "--steps",
        "20",
        "--lr",
        "0.05",
        "-o",
        "t.safetensors",
    )
    result = cli(*args, "--eval", "digits", "--json")
    assert result.exit_code == 0, result.stderr
    quality = report_of(result)["quality"]
    check_against_eval(cli, quality, mlp, Path("t.safetensors"))
    assert quality["accuracy"]["difference"] > 0.3  # 20 steps lift a fresh MLP well above chance


def test_prune_eval_is_eval_before_and_after_in_table_json_and_report(cli, mlp: Path) -> None:
    cli("retrain", mlp, "--data", "digits", "--steps", "20", "--lr", "0.05", "-o", "t.safetensors")
    args = ("prune", "t.safetensors", "-m", "magnitude", "-s", "0.8", "-o", "p.safetensors")
    result = cli(*args, "--eval", "digits", "--json", "--report", "r.md")
    assert result.exit_code == 0, result.stderr
    quality = report_of(result)["quality"]
    check_against_eval(cli, quality, Path("t.safetensors"), Path("p.safetensors"))
    assert quality["accuracy"]["difference"] < 0  # 80% of a small MLP's weights cost accuracy
    saved = Path("r.md").read_text()
    accuracy = quality["accuracy"]
    change = f"{abs(accuracy['difference']) * 100:.2f} pts"
    assert f"{accuracy['before']:.2%} → {accuracy['after']:.2%} (−{change})" in saved
    table = cli(*args, "--eval", "digits", "--force").stdout
    assert f"accuracy: {accuracy['before']:.2%} → {accuracy['after']:.2%}" in table


def test_structured_prune_eval_measures_the_smaller_model(cli, mlp: Path) -> None:
    args = ("prune", mlp, "-m", "snip", "--data", "digits", "-s", "0.5", "-o", "s.safetensors")
    result = cli(*args, "--granularity", "channel", "--eval", "digits", "--json")
    assert result.exit_code == 0, result.stderr
    check_against_eval(cli, report_of(result)["quality"], mlp, Path("s.safetensors"))
    assert load_file("s.safetensors")["fc1.weight"].shape[0] < 16  # the model did shrink


def test_prune_eval_to_stdout_puts_the_report_on_stderr(cli, mlp: Path) -> None:
    result = cli(
        "prune", mlp, "-m", "magnitude", "-s", "0.5", "-o", "-", "--eval", "digits", "--json"
    )
    assert result.exit_code == 0, result.stderr
    quality = report_of(result, "stderr")["quality"]
    tensors = load(result.stdout_bytes)
    assert int((tensors["fc1.weight"] == 0).sum()) > 0
    assert quality["accuracy"]["before"] == pytest.approx(evaluated(cli, mlp)["accuracy"])


def test_eval_refusals_leave_no_file(cli, mlp: Path, workdir: Path) -> None:
    prune = ("prune", mlp, "-m", "magnitude", "-s", "0.5", "-o", "p.safetensors")
    x, y = torch.zeros(20, 40), torch.zeros(20, dtype=torch.int64)
    save_file({"x": x, "y": y}, "forty.safetensors")  # 40 features: the MLP takes 64
    run_refused(cli, workdir, (*prune, "--eval", "forty.safetensors"), 2, "forty.safetensors")
    run_refused(cli, workdir, (*prune, "--eval", "digits", "--dry-run"), 2, "--dry-run")
    tensors = load_file(str(mlp))
    write_weights(workdir / "w.safetensors", tensors)
    weights = ("prune", "w.safetensors", "-m", "magnitude", "-s", "0.5", "--eval", "digits")
    run_refused(cli, workdir, weights, 3, "--arch")
    retrain = ("retrain", mlp, "--data", "digits", "--steps", "1", "--eval", "digits")
    run_refused(cli, workdir, (*retrain, "--num-classes", "12"), 2, "--num-classes")
    assert files_in(workdir) == {"mlp.safetensors", "w.safetensors", "forty.safetensors"}


@pytest.mark.parametrize(
    "flags",
    [("-m", "wanda"), ("-m", "magnitude", "--granularity", "neuron")],
    ids=["wanda", "neuron"],
)
def test_folder_prune_block_by_block_eval_is_eval_of_both_folders(
    cli, workdir: Path, flags: tuple[str, ...]
) -> None:
    folder = write_calibrated_llama(workdir)
    text = (workdir / "corpus.txt").read_text()[:4000]
    (workdir / "heldout.txt").write_text(text)
    args = ("prune", folder, *flags, "-s", "0.5", "--data", "corpus.txt", "-o", "out", "--json")
    result = cli(*args, "--samples", "4", "--seq-len", "16", "--eval", "heldout.txt")
    assert result.exit_code == 0, result.stderr
    entry = report_of(result)["quality"]["perplexity"]
    for name, key in ((folder.name, "before"), ("out", "after")):
        found = cli("eval", name, "--data", "heldout.txt", "--json")
        assert entry[key] == pytest.approx(report_of(found)["quality"]["perplexity"]["value"])
    assert entry["difference"] == entry["after"] - entry["before"] != 0


def test_folder_magnitude_prune_eval_is_eval_perplexity_of_both_folders(cli, workdir: Path) -> None:
    write_llama(workdir / "llama")
    ids = torch.randint(0, 32, (1, 320), generator=torch.Generator().manual_seed(0))
    save_file({"input_ids": ids}, "ids.safetensors")
    args = ("prune", "llama", "-m", "magnitude", "-s", "0.5", "-o", "llama50", "--json")
    result = cli(*args, "--eval", "ids.safetensors")
    assert result.exit_code == 0, result.stderr
    entry = report_of(result)["quality"]["perplexity"]
    for folder, key in (("llama", "before"), ("llama50", "after")):
        found = cli("eval", folder, "--data", "ids.safetensors", "--json")
        assert entry[key] == pytest.approx(report_of(found)["quality"]["perplexity"]["value"])
    assert entry["difference"] == entry["after"] - entry["before"] != 0
    assert entry["windows"] == 10 and entry["seq_len"] == 32
