"""IMP (lottery tickets) through `prunecli prune --method imp`, checked against an independent
route through `retrain` and `prune --method magnitude`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from prunecli.criteria.imp import layer_shares, round_sparsities
from tests.conftest import SMALL_MLP, metadata_of, report_of, write_zoo
from tests.evaluation.svg_lines import line_groups, markers, vertices

TRAIN = ("--steps", "6", "--batch-size", "40", "--lr", "0.01")


@pytest.fixture
def setup(cli, workdir: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0).astype(np.int64)
    xt = rng.normal(size=(60, 12)).astype(np.float32)
    yt = (xt[:, 0] > 0).astype(np.int64) + 2 * (xt[:, 1] > 0).astype(np.int64)
    np.savez(workdir / "data.npz", x=x, y=y, x_test=xt, y_test=yt)
    write_zoo(workdir / "init.safetensors", "mlp", SMALL_MLP)
    return workdir


def test_round_sparsities_by_hand():
    rounds = round_sparsities(0.0, 0.92, 0.2)
    assert len(rounds) == 12  # 0.8^11 = 0.086 > 0.08 ≥ 0.8^12
    assert rounds[:3] == pytest.approx([0.2, 0.36, 0.488])
    assert rounds[-1] == 0.92
    assert round_sparsities(0.5, 0.75, 0.5) == [0.75]


def _ticket_by_hand(cli, *scope: str) -> None:
    """The independent route for one IMP round at 0.5: retrain → prune -m magnitude → retrain
    --rewind-to init, writing ticket.safetensors."""
    cli("retrain", "init.safetensors", "--data", "data.npz", *TRAIN, "-o", "dense.safetensors")
    cli("prune", "dense.safetensors", "-m", "magnitude", "-s", "0.5", *scope,
        "-o", "mask.safetensors")  # fmt: skip
    cli("retrain", "mask.safetensors", "--data", "data.npz", *TRAIN,
        "--rewind-to", "init.safetensors", "-o", "ticket.safetensors")  # fmt: skip


def _same_weights(folder: Path, *context: object) -> dict[str, torch.Tensor]:
    """imp.safetensors equals ticket.safetensors tensor for tensor; returns imp's tensors."""
    expected, got = load_file(folder / "ticket.safetensors"), load_file(folder / "imp.safetensors")
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6), (*context, name)
    return got


def imp(cli, source: str, sparsity: str, *args: object):
    """``prunecli prune SOURCE -m imp -s SPARSITY --data data.npz ARGS``."""
    return cli("prune", source, "-m", "imp", "-s", sparsity, "--data", "data.npz", *args)


def test_one_round_equals_train_magnitude_rewind_retrain(cli, setup):
    _ticket_by_hand(cli)
    for source, extra in (
        ("init.safetensors", []),
        ("dense.safetensors", ["--rewind-to", "init.safetensors"]),
    ):
        result = imp(cli, source, "0.5", "--rate", "0.5", "--last-layer", "same", *TRAIN,
                     *extra, "-o", "imp.safetensors", "--force", "--json")  # fmt: skip
        assert result.exit_code == 0, result.stderr
        _same_weights(setup, source)
        rounds = report_of(result)["pruning"]["rounds"]
        assert [r["round"] for r in rounds] == [0, 1]
        # from dense.safetensors (trained, ≠ the rewind point) round 0 is only evaluated
        assert rounds[0]["steps"] == (6 if source == "init.safetensors" else 0)


def test_late_rewinding_equals_rewinding_to_an_early_checkpoint(cli, setup):
    """--rewind-step 2: survivors go back to the weights after 2 steps, then train 6 − 2."""
    short = ("--batch-size", "40", "--lr", "0.01")
    cli(
        "retrain",
        "init.safetensors",
        "--data",
        "data.npz",
        "--steps",
        2,
        *short,
        "-o",
        "early.safetensors",
    )
    cli("retrain", "init.safetensors", "--data", "data.npz", *TRAIN, "-o", "dense.safetensors")
    cli("prune", "dense.safetensors", "-m", "magnitude", "-s", "0.5", "-o", "mask.safetensors")
    cli(
        "retrain",
        "mask.safetensors",
        "--data",
        "data.npz",
        "--steps",
        4,
        *short,
        "--rewind-to",
        "early.safetensors",
        "-o",
        "ticket.safetensors",
    )
    result = imp(cli, "init.safetensors", "0.5", "--rate", "0.5", "--last-layer", "same",
                 "--rewind-step", 2, *TRAIN, "-o", "imp.safetensors", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    _same_weights(setup)
    assert [r["steps"] for r in report_of(result)["pruning"]["rounds"]] == [6, 4]


def test_rounds_exact_count_half_rate_output_layer_and_curve(cli, setup):
    result = imp(cli, "init.safetensors", "0.8", "--rate", "0.5", *TRAIN, "-o", "imp.safetensors",
                 "--report", "curve.svg", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    rounds = report["pruning"]["rounds"]
    assert [r["sparsity"] * 352 for r in rounds] == pytest.approx([0, 176, 264, 282])
    assert all(0 <= r["test_accuracy"] <= r["best_test_accuracy"] <= 1 for r in rounds)
    weights = load_file(setup / "imp.safetensors")
    zeros = {
        name: int((weights[name] == 0).sum()) for name in ("fc1.weight", "fc2.weight", "fc3.weight")
    }
    assert sum(zeros.values()) == round(0.8 * 352)
    # fc3 (4×8, the output layer) is pruned at half the rate of the rest
    assert zeros["fc3.weight"] / 32 < (zeros["fc1.weight"] + zeros["fc2.weight"]) / 320
    # the picture: one line through one marker per round, sparser rounds further right
    (line,) = line_groups((setup / "curve.svg").read_bytes()).values()
    assert len(vertices(line)) == len(markers(line)) == 4
    ys = [y for _, y in sorted(markers(line))]  # left to right
    accuracies = [r["test_accuracy"] for r in sorted(rounds, key=lambda r: r["sparsity"])]
    assert all(ys[i] < ys[j] for i in range(4) for j in range(4) if accuracies[i] > accuracies[j])
    stored = json.loads(metadata_of(setup / "imp.safetensors")["prunecli.rounds"])
    assert stored == rounds


def test_dense_output_layer_and_keep_best(cli, setup):
    result = imp(cli, "init.safetensors", "0.7", "--rate", "0.4", "--last-layer", "dense",
                 "--keep-best", *TRAIN, "-o", "imp.safetensors", "--report", "c.png",
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    weights = load_file(setup / "imp.safetensors")
    assert int((weights["fc3.weight"] == 0).sum()) == 0
    report = report_of(result)
    rounds = report["pruning"]["rounds"][1:]
    best = max(rounds, key=lambda r: r["test_accuracy"])
    assert report["pruning"]["achieved_sparsity"] == pytest.approx(best["sparsity"])
    assert (setup / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["-m", "imp", "--rewind-to", "other.safetensors", *TRAIN], 2, "does not match"),
        (
            ["-m", "imp", "--rewind-to", "init.safetensors", "--rewind-step", "2", *TRAIN],
            2,
            "not both",
        ),
        (["-m", "imp", "--rewind-step", "6", *TRAIN], 2, "--rewind-step 6"),
        (["-m", "imp", "--rate", "1.5", *TRAIN], 2, "--rate"),
        (["-m", "imp"], 2, "exactly one of --epochs or --steps"),
        (["-m", "magnitude", "--steps", "5"], 2, "training methods"),
        (["-m", "imp", "--iterations", "3", *TRAIN], 2, "own rounds"),
        (["-m", "magnitude", "--report", "r.png"], 2, ".png report"),
        (["-m", "imp", "--scope", "erk", *TRAIN], 2, "does not support --scope erk"),
    ],
)
def test_bad_imp_requests(cli, setup, args, code, message):
    write_zoo(setup / "other.safetensors", "mlp", {"widths": [12, 20, 8, 4]})
    result = cli(
        "prune", "init.safetensors", "-s", "0.5", "--data", "data.npz", *args, "-o", "o.safetensors"
    )
    assert result.exit_code == code, result.stderr
    assert message in result.stderr
    assert not (setup / "o.safetensors").exists()


def test_score_refuses_a_training_method(cli, setup):
    result = cli("score", "init.safetensors", "-m", "imp", "--data", "data.npz")
    assert result.exit_code == 3
    assert "prunecli prune --method imp" in result.stderr


def test_best_accuracy_of_a_round_is_the_best_of_its_evaluations(cli, setup):
    """The rounds' "best test acc" (the MNIST-1D notebook's max_acc) against the last round's
    own per-epoch history, which the report carries."""
    args = ("--steps", "18", "--batch-size", "40", "--lr", "0.05")
    result = imp(cli, "init.safetensors", "0.5", "--rate", "0.5", *args, "-o", "imp.safetensors",
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    history = report["training"]["history"]
    assert len(history) == 3  # 18 steps of 40 over 240 samples: one evaluation per epoch
    seen = [row["test_accuracy"] for row in history] + [report["training"]["test_accuracy"]]
    assert report["pruning"]["rounds"][-1]["best_test_accuracy"] == max(seen)
    table = imp(cli, "init.safetensors", "0.5", "--rate", "0.5", *args, "-o", "imp2.safetensors")
    assert table.exit_code == 0, table.stderr
    assert "best test acc" in table.stdout


def test_layer_shares_by_hand():
    # from dense: 0.3 of each layer, largest remainder (3.0, 6.0, 0.9 → 3, 6, 1 = 10)
    assert layer_shares({"a": 10, "b": 20, "c": 3}, {"a": 10, "b": 20, "c": 3}, 10) == {
        "a": 3,
        "b": 6,
        "c": 1,
    }
    # "a" is already 80% sparse, above the common level of the rest: it gets nothing
    # and "b", "c" are brought to (10 + 0 + 10) / 20 = ... solved over b, c alone: 10/30
    shares = layer_shares({"a": 2, "b": 20, "c": 10}, {"a": 10, "b": 20, "c": 10}, 10)
    assert shares == {"a": 0, "b": 7, "c": 3}  # b, c end at 7/20 and 3/10, level 1/3
    assert sum(layer_shares({"a": 7, "b": 5}, {"a": 9, "b": 5}, 12).values()) == 12


def test_layer_scope_round_equals_layerwise_magnitude_rewind_retrain(cli, setup):
    """One IMP round under --scope layer against retrain → prune -m magnitude --scope layer →
    retrain --rewind-to init, and every layer at the same sparsity."""
    _ticket_by_hand(cli, "--scope", "layer")
    result = imp(cli, "init.safetensors", "0.5", "--rate", "0.5", "--scope", "layer",
                 "--last-layer", "same", *TRAIN, "-o", "imp.safetensors", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    got = _same_weights(setup)
    assert report_of(result)["pruning"]["scope"] == "layer"
    for name in ("fc1.weight", "fc2.weight", "fc3.weight"):
        assert float((got[name] == 0).float().mean()) == pytest.approx(0.5)


def test_layer_scope_with_a_half_rate_output_layer(cli, setup):
    result = imp(cli, "init.safetensors", "0.75", "--rate", "0.5", "--scope", "layer", *TRAIN,
                 "-o", "imp.safetensors")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    weights = load_file(setup / "imp.safetensors")
    zeros = {n: int((weights[n] == 0).sum()) for n in ("fc1.weight", "fc2.weight", "fc3.weight")}
    assert sum(zeros.values()) == round(0.75 * 352)
    sparsity = {n: zeros[n] / weights[n].numel() for n in zeros}
    assert abs(sparsity["fc1.weight"] - sparsity["fc2.weight"]) < 0.01  # one common level
    assert sparsity["fc3.weight"] < sparsity["fc1.weight"]  # the head at half rate
