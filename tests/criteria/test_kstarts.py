"""K-starts: K exact random masks among live weights, the fittest by the reported figures,
the gradient sum by hand, CLI and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from prunecli.criteria.kstarts import GradientSum, KStarts, random_masks
from prunecli.data.labelled import Dataset
from prunecli.training.settings import TrainSettings
from tests.conftest import report_of, run_refused, write_method_inputs
from tests.method_jobs import make_job

WEIGHTS = ("fc1.weight", "fc2.weight", "fc3.weight")
TRAIN = ("--steps", "12", "--batch-size", "40", "--lr", "0.01")


def test_random_masks_exact_among_live_and_seeded():
    module = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 4))
    with torch.no_grad():
        module[0].weight[:3] = 0.0  # 30 zeros already
    data = Dataset(torch.zeros(4, 10), torch.zeros(4, dtype=torch.int64))
    job = make_job(module, data, 0.5, KStarts, TrainSettings(steps=1))
    live = job.masks()
    draws = [random_masks(job, live, 70, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    for masks in draws:
        assert sum(int((~masks[n]).sum()) for n in job.names) == 70
        assert not bool(masks["0.weight"][:3].any())
    assert all(torch.equal(draws[0][n], draws[1][n]) for n in job.names)
    assert not all(torch.equal(draws[0][n], draws[2][n]) for n in job.names)


def test_gradient_sum_by_hand():
    """L = CE of logits w·x for one sample: ∂L/∂w = (softmax − onehot) ⊗ x, summed over steps;
    with lr 1e-9 the weights (hence the gradient) do not change between the 3 steps."""
    module = nn.Sequential(nn.Linear(2, 2, bias=False))
    w = torch.tensor([[0.5, -1.0], [2.0, 0.3]])
    with torch.no_grad():
        module[0].weight.copy_(w)
    x, y = torch.tensor([[1.0, 3.0]]), torch.tensor([1])
    logits = w @ x[0]
    p = torch.softmax(logits, 0)
    grad = torch.outer(p - torch.tensor([0.0, 1.0]), x[0])
    data = Dataset(x, y)
    job = make_job(module, data, 0.0, KStarts, TrainSettings(steps=3, batch_size=1, lr=1e-9))
    hook = GradientSum()
    job.train(job.masks(), hooks=[hook])
    assert hook.total == pytest.approx(3 * float(grad.abs().sum()), rel=1e-5)


@pytest.fixture
def setup(cli, workdir: Path) -> Path:
    write_method_inputs(workdir)
    cli("prune", "init.safetensors", "-m", "random", "-s", "0.2", "-o", "start.safetensors")
    return workdir


@pytest.mark.parametrize("fitness", ["magnitude", "gradient", "both"])
def test_kstarts_cli_keeps_the_fittest(cli, setup, fitness):
    result = cli(
        "prune", "start.safetensors", "-m", "kstarts", "-s", "0.7", "--data", "data.npz", *TRAIN,
        "--starts", "3", "--fitness", fitness, "--json", "-o", "out.safetensors",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rounds = report_of(result)["pruning"]["rounds"]
    starts, final = rounds[:3], rounds[3]
    if fitness == "both":
        mean_m = sum(r["magnitude"] for r in starts) / 3
        mean_g = sum(r["gradient"] for r in starts) / 3
        values = [r["magnitude"] / mean_m + r["gradient"] / mean_g for r in starts]
    else:
        values = [r[fitness] for r in starts]
    assert [r["chosen"] for r in starts] == [v == max(values) for v in values]
    assert len({r["magnitude"] for r in starts}) == 3  # three different masks
    assert final["steps"] == 12 and all(r["steps"] == 6 for r in starts)  # 1 epoch = 6 steps
    out, before = load_file(setup / "out.safetensors"), load_file(setup / "start.safetensors")
    assert sum(int((out[n] == 0).sum()) for n in WEIGHTS) == round(0.7 * 352)
    for name in WEIGHTS:
        assert bool((out[name][before[name] == 0] == 0).all())


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--starts", "0", "--starts"),
        ("--fitness", "loss", "--fitness"),
        ("--warmup-epochs", "2", "leaves no training"),  # 2 epochs = 12 steps = all of it
    ],
)
def test_kstarts_bad_options(cli, setup, flag, value, message):
    args = (
        "prune", "start.safetensors", "-m", "kstarts", "-s", "0.5", "--data", "data.npz", *TRAIN,
        flag, value, "-o", "out.safetensors",
    )  # fmt: skip
    run_refused(cli, setup, args, 2, message)


def test_method_options_need_a_training_method(cli, setup):
    result = cli("prune", "start.safetensors", "-m", "magnitude", "-s", "0.5", "--gamma", "0.1")
    assert result.exit_code == 2
    assert "--gamma is an option of a training method" in result.stderr
