"""The checks `prune` and `score` share with the Python API (jobs/validate.py), on the command
line: a score of a folder is one file, a training option refused for a one-shot method, and the
settings that were checked are the ones that run."""

from __future__ import annotations

from pathlib import Path

from conftest import SMALL_MLP, metadata_of, report_of, run_refused, write_method_inputs, write_zoo
from safetensors.torch import load_file


def test_val_fraction_is_refused_for_a_method_that_does_not_train(cli, workdir: Path) -> None:
    write_method_inputs(workdir)
    args = ("prune", "init.safetensors", "-m", "magnitude", "-s", "0.5", "--val-fraction", "0.2")
    result = run_refused(cli, workdir, args, 2, "--val-fraction is an option of a training method")
    assert "prunecli retrain" in result.stderr
    # a training method takes it
    result = cli(
        "prune", "init.safetensors", "-m", "iht", "-s", "0.5", "--data", "data.npz",
        "--steps", "4", "--val-fraction", "0.2", "-o", "iht.safetensors",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr


def test_score_of_a_folder_writes_one_file(cli, workdir: Path) -> None:
    from conftest import write_llama

    folder = write_llama(workdir / "llama")
    result = cli("score", folder, "-m", "magnitude", "-o", "s.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    scores = load_file("s.safetensors")
    assert "model.layers.0.self_attn.q_proj.weight" in scores
    assert report_of(result)["output"]["kind"] == "scores"
    assert metadata_of(workdir / "s.safetensors")["prunecli.method"] == "magnitude"


def test_the_checked_settings_are_the_ones_that_run(cli, workdir: Path) -> None:
    write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP)
    args = ("-m", "random", "-s", "0.6", "--iterations", "3", "--schedule", "linear")
    result = cli("prune", "model.safetensors", *args, "--seed", "4", "-o", "p.safetensors")
    assert result.exit_code == 0, result.stderr
    metadata = metadata_of(workdir / "p.safetensors")
    kept = [metadata[f"prunecli.{key}"] for key in ("iterations", "schedule", "seed")]
    assert kept == ["3", "linear", "4"]
    result = cli("prune", "model.safetensors", *args, "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert (
        '"sparsity": 0.6' in result.stdout and not (workdir / "model.pruned.safetensors").exists()
    )
