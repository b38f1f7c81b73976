"""BINGO: significance by hand on a two-by-two layer; one-shot exact prune; CLI; bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from prunecli.criteria.bingo import Bingo, BingoHook, _Walk
from prunecli.data.labelled import Dataset
from prunecli.training.settings import TrainSettings
from tests.conftest import report_of, run_refused, write_method_inputs
from tests.method_jobs import make_job

TRAIN = ("--steps", "6", "--batch-size", "40", "--lr", "0.01")


def _hand_case(sparsity: float):
    """x = (1, 0.5), every label 0, W = [[1, .01], [.01, 1]]: logits (1.005, 0.51), correct.
    Zeroing W00 gives (0.005, 0.51): every sample wrong, |Δacc| = 1. Zeroing any other entry
    keeps class 0 ahead: |Δacc| = 0. SGD at lr 1e-9 leaves the weights as they are."""
    module = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        module[0].weight.copy_(torch.tensor([[1.0, 0.01], [0.01, 1.0]]))
    data = Dataset(torch.tensor([[1.0, 0.5]]).repeat(20, 1), torch.zeros(20, dtype=torch.int64))
    settings = TrainSettings(steps=8, batch_size=10, lr=1e-9, optimizer="sgd", momentum=0.0)
    return make_job(module, data, sparsity, Bingo, settings, bingo_fraction=0.25)


def test_significance_by_hand():
    job = _hand_case(0.5)
    hook = BingoHook(job.masks(), 0.25, 1, seed=0)
    job.train(job.masks(), hooks=[hook])
    assert hook.probes == 8
    counts = hook.counts["0.weight"]
    assert torch.equal(counts, torch.full((2, 2), 2))  # 1 entry a probe, each probed twice
    expected = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    assert torch.equal(hook.significance["0.weight"], expected)


def test_the_significant_weight_survives_where_magnitude_ties():
    # W00 and W11 have the same |w|; only W00 matters: at 3 zeros of 4 it is the one kept
    job = _hand_case(0.75)
    result = Bingo().run(job)
    assert torch.equal(result.masks["0.weight"], torch.tensor([[True, False], [False, False]]))
    assert [row.round for row in result.rounds] == [0, 1]
    assert result.rounds[1].test_accuracy is None  # no test split, no val fraction


def test_every_live_entry_is_probed_equally_often():
    live = torch.ones(12, dtype=torch.bool)
    live[[0, 5]] = False  # 10 live entries, 3 a probe: 10 probes cover each exactly 3 times
    walk = _Walk(live, 0.3, torch.Generator().manual_seed(0))
    counts = torch.zeros(12, dtype=torch.int64)
    for _ in range(10):
        chunk = walk.next()
        assert chunk.numel() == len(set(chunk.tolist())) == 3
        counts[chunk] += 1
    assert counts.tolist() == [0, 3, 3, 3, 3, 0, 3, 3, 3, 3, 3, 3]


@pytest.fixture
def setup(cli, workdir: Path) -> Path:
    write_method_inputs(workdir)
    return workdir


def test_bingo_cli(cli, setup):
    result = cli(
        "prune", "init.safetensors", "-m", "bingo", "-s", "0.8", "--data", "data.npz", *TRAIN,
        "--bingo-fraction", "0.05", "--val-fraction", "0.25", "--json", "-o", "out.safetensors",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    tensors = load_file(setup / "out.safetensors")
    assert sum(int((tensors[f"fc{i}.weight"] == 0).sum()) for i in (1, 2, 3)) == round(0.8 * 352)
    rounds = report["pruning"]["rounds"]
    assert [row["sparsity"] for row in rounds] == [0.0, pytest.approx(282 / 352)]
    assert rounds[1]["test_accuracy"] is not None
    assert report["training"]["bingo"]["probes"] == 6


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--bingo-fraction", "0"), ("--bingo-fraction", "1.5"), ("--bingo-every", "0")],
)
def test_bingo_bad_options(cli, setup, flag, value):
    args = (
        "prune", "init.safetensors", "-m", "bingo", "-s", "0.5", "--data", "data.npz", *TRAIN,
        flag, value, "-o", "out.safetensors",
    )  # fmt: skip
    run_refused(cli, setup, args, 2, flag)
