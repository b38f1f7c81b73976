"""`prunecli retrain` end to end: mask held, history in report and metadata, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import SMALL_MLP, files_in, metadata_of, report_of, write_zoo

WEIGHTS = ("fc1.weight", "fc2.weight", "fc3.weight")


@pytest.fixture
def data_file(workdir: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0).astype(np.int64)
    xt = rng.normal(size=(60, 12)).astype(np.float32)
    yt = (xt[:, 0] > 0).astype(np.int64) + 2 * (xt[:, 1] > 0).astype(np.int64)
    path = workdir / "data.npz"
    np.savez(path, x=x, y=y, x_test=xt, y_test=yt)
    return path


@pytest.fixture
def pruned_file(cli, workdir: Path) -> Path:
    write_zoo(workdir / "init.safetensors", "mlp", SMALL_MLP)
    result = cli(
        "prune", "init.safetensors", "-m", "random", "-s", "0.7", "-o", "pruned.safetensors"
    )
    assert result.exit_code == 0, result.stderr
    return workdir / "pruned.safetensors"


def test_retrain_keeps_the_mask_and_reports_history(cli, pruned_file, data_file, workdir):
    result = cli(
        "retrain",
        pruned_file,
        "--data",
        data_file,
        "--epochs",
        3,
        "--batch-size",
        40,
        "--lr",
        0.01,
        "--optimizer",
        "adamw",
        "--weight-decay",
        0.01,
        "-o",
        "out.safetensors",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    before, after = load_file(pruned_file), load_file(workdir / "out.safetensors")
    for name in WEIGHTS:
        assert torch.equal(before[name] == 0, after[name] == 0)  # the same zeros, exactly
        assert not torch.equal(before[name], after[name])  # and the survivors trained
    report = report_of(result)
    history = report["training"]["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert [row["step"] for row in history] == [6, 12, 18]  # 240 samples / 40
    assert all(0 <= row["test_accuracy"] <= 1 for row in history)
    assert report["training"]["settings"]["optimizer"] == "adamw"
    assert report["totals"]["sparsity"] == pytest.approx(0.7, abs=1 / 352)
    stored = json.loads(metadata_of(workdir / "out.safetensors")["prunecli.training"])
    assert stored["history"] == history
    assert metadata_of(workdir / "out.safetensors")["prunecli.arch"] == "mlp"


def test_rewind_resets_survivors_to_the_given_weights(cli, pruned_file, data_file, workdir):
    # train, then retrain with zero learning steps' worth of effect: rewind + 1 tiny step
    cli("retrain", pruned_file, "--data", data_file, "--steps", 4, "-o", "trained.safetensors")
    result = cli(
        "retrain",
        "trained.safetensors",
        "--data",
        data_file,
        "--steps",
        1,
        "--lr",
        1e-12,
        "--rewind-to",
        "init.safetensors",
        "-o",
        "rewound.safetensors",
    )
    assert result.exit_code == 0, result.stderr
    init, rewound = (
        load_file(workdir / "init.safetensors"),
        load_file(workdir / "rewound.safetensors"),
    )
    pruned = load_file(pruned_file)
    for name in WEIGHTS:
        keep = pruned[name] != 0
        assert torch.allclose(rewound[name], init[name] * keep, atol=1e-6)


def test_rewind_to_a_mismatched_file_is_refused(cli, pruned_file, data_file, workdir):
    write_zoo(workdir / "other.safetensors", "mlp", {"widths": [12, 20, 8, 4]})
    result = cli(
        "retrain",
        pruned_file,
        "--data",
        data_file,
        "--steps",
        2,
        "--rewind-to",
        "other.safetensors",
        "-o",
        "out.safetensors",
    )
    assert result.exit_code == 2
    assert "does not match" in result.stderr and "has shape" in result.stderr
    assert not (workdir / "out.safetensors").exists()


def test_new_head_for_transfer(cli, pruned_file, workdir):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 12)).astype(np.float32)
    np.savez(workdir / "seven.npz", x=x, y=np.arange(100) % 7)
    result = cli(
        "retrain",
        pruned_file,
        "--data",
        "seven.npz",
        "--steps",
        3,
        "--num-classes",
        7,
        "-o",
        "moved.safetensors",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    moved, pruned = load_file(workdir / "moved.safetensors"), load_file(pruned_file)
    assert moved["fc3.weight"].shape == (7, 8) and bool((moved["fc3.weight"] != 0).all())
    for name in ("fc1.weight", "fc2.weight"):
        assert torch.equal(moved[name] == 0, pruned[name] == 0)
    assert json.loads(metadata_of(workdir / "moved.safetensors")["prunecli.arch_kwargs"]) == {
        "widths": [12, 16, 8, 7]
    }
    inspect = cli("inspect", "moved.safetensors", "--json")  # loads with its new architecture
    assert inspect.exit_code == 0, inspect.stderr


def test_labels_beyond_the_classes_need_num_classes(cli, pruned_file, workdir):
    np.savez(workdir / "seven.npz", x=np.zeros((20, 12), np.float32), y=np.arange(20) % 7)
    result = cli("retrain", pruned_file, "--data", "seven.npz", "--steps", 2, "-o", "o.safetensors")
    assert result.exit_code == 2
    assert "7 classes" in result.stderr and "4 outputs" in result.stderr
    assert not (workdir / "o.safetensors").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--steps", "0"], "--steps must be at least 1"),
        ([], "exactly one of --epochs or --steps"),
        (["--steps", "2", "--optimizer", "rmsprop"], "unknown --optimizer"),
    ],
)
def test_bad_training_options(cli, pruned_file, data_file, workdir, args, message):
    result = cli("retrain", pruned_file, "--data", data_file, *args, "-o", "o.safetensors")
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (workdir / "o.safetensors").exists()


def test_nan_loss_writes_the_last_good_weights_and_exits_2(cli, pruned_file, data_file, workdir):
    result = cli(
        "retrain",
        pruned_file,
        "--data",
        data_file,
        "--epochs",
        5,
        "--lr",
        1e15,
        "--optimizer",
        "sgd",
        "-o",
        "o.safetensors",
    )
    assert result.exit_code == 2
    assert "diverged" in result.stderr and "o.safetensors" in result.stderr
    written = load_file(workdir / "o.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in written.values())


def test_interrupt_writes_nothing(cli, pruned_file, data_file, workdir, monkeypatch):
    import prunecli.jobs.train as jobs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "train", interrupted)
    before = files_in(workdir)
    result = cli("retrain", pruned_file, "--data", data_file, "--steps", 2, "-o", "o.safetensors")
    assert result.exit_code == 130
    assert "nothing was written" in result.stderr
    assert files_in(workdir) == before
