"""Dissipating gradients: the pruned set equals a direct computation from recorded weights;
kstarts+dissipating; bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from prunecli.criteria.dissipating import Dissipating
from prunecli.data.labelled import Dataset
from prunecli.models.zoo import build_arch
from prunecli.training.loop import train
from prunecli.training.settings import TrainSettings
from tests.conftest import SMALL_MLP, report_of, run_refused, write_zoo
from tests.method_jobs import make_job, weights

WEIGHTS = ("fc1.weight", "fc2.weight", "fc3.weight")
TRAIN = ("--steps", "12", "--batch-size", "40", "--lr", "0.01")


def _data() -> Dataset:
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(240, 12)), dtype=torch.float32)
    return Dataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def _expected_pruned(w0, w1, gamma: float, n: int) -> set[tuple[str, int]]:
    """The n entries to prune, by a sort: those with |w1 − w0| ≤ γ|w0| that moved least
    relative to |w0|; if fewer qualify, the rest by smallest |w1|."""
    entries = [(name, i) for name in WEIGHTS for i in range(w0[name].numel())]

    def move(e):
        a, b = float(w0[e[0]].reshape(-1)[e[1]]), float(w1[e[0]].reshape(-1)[e[1]])
        return abs(b - a) / abs(a)

    stayed = sorted((e for e in entries if move(e) <= gamma), key=move)
    chosen = set(stayed[:n])
    rest = sorted(
        (e for e in entries if e not in chosen),
        key=lambda e: abs(float(w1[e[0]].reshape(-1)[e[1]])),
    )
    return chosen | set(rest[: n - len(chosen)])


@pytest.mark.parametrize(("gamma", "fills"), [(10.0, False), (0.02, True)])
def test_pruned_set_equals_direct_computation(gamma, fills):
    torch.manual_seed(0)
    module = build_arch("mlp", SMALL_MLP).module
    twin = copy.deepcopy(module)
    w0 = weights(module)
    settings = TrainSettings(steps=12, batch_size=40, lr=0.01)
    # the independent route: one dense epoch (6 steps) with the same seed, weights recorded
    train(twin, {n: torch.ones_like(w0[n], dtype=torch.bool) for n in WEIGHTS}, _data(),
          TrainSettings(steps=6, batch_size=40, lr=0.01))  # fmt: skip
    w1 = weights(twin)
    job = make_job(module, _data(), 0.5, Dissipating, settings, gamma=gamma, dissipate_epochs=1)
    result = Dissipating().run(job)
    n = round(0.5 * 352)
    expected = _expected_pruned(w0, w1, gamma, n)
    got = {
        (name, i)
        for name in WEIGHTS
        for i in (~result.masks[name]).reshape(-1).nonzero()[:, 0].tolist()
    }
    assert got == expected
    row = result.rounds[-1]
    assert row.extra["pruned_by_gamma"] + row.extra["pruned_by_magnitude"] == n
    assert bool(result.warnings) == fills
    for name in WEIGHTS:  # pruned at the end of epoch 1 and held at zero after it
        assert bool((module.get_parameter(name)[~result.masks[name]] == 0).all())


@pytest.fixture
def setup(cli, workdir: Path) -> Path:
    data = _data()
    np.savez(workdir / "data.npz", x=data.x.numpy(), y=data.y.numpy())
    write_zoo(workdir / "init.safetensors", "mlp", SMALL_MLP)
    return workdir


def test_kstarts_dissipating_cli(cli, setup):
    result = cli(
        "prune", "init.safetensors", "-m", "kstarts+dissipating", "-s", "0.75", "--data",
        "data.npz", *TRAIN, "--starts", "2", "--gamma", "0.3", "--json", "-o", "out.safetensors",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    tensors = load_file(setup / "out.safetensors")
    assert sum(int((tensors[n] == 0).sum()) for n in WEIGHTS) == round(0.75 * 352)
    rounds = report["pruning"]["rounds"]
    # two starts at 1 − √0.25 = 0.5, then dissipation to 0.75
    assert [row["sparsity"] for row in rounds] == [0.5, 0.5, 0.75]
    assert sum(row["chosen"] for row in rounds[:2]) == 1
    assert rounds[-1]["steps"] == 12


@pytest.mark.parametrize(
    ("method", "flag", "value"),
    [
        ("dissipating", "--gamma", "-0.1"),
        ("dissipating", "--dissipate-epochs", "0"),
        ("kstarts+dissipating", "--start-sparsity", "0.9"),
    ],
)
def test_dissipating_bad_options(cli, setup, method, flag, value):
    args = (
        "prune", "init.safetensors", "-m", method, "-s", "0.5", "--data", "data.npz", *TRAIN,
        flag, value, "-o", "out.safetensors",
    )  # fmt: skip
    run_refused(cli, setup, args, 2, flag)
