"""IHT: the projection is a top-k by sorting; pruned weights can come back; CLI and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from prunecli.criteria.iht import Iht, top_k_support
from prunecli.data.labelled import Dataset
from prunecli.pruning.allocation import keep_counts
from prunecli.training.settings import TrainSettings
from tests.conftest import report_of, run_refused, write_method_inputs
from tests.method_jobs import make_job

TRAIN = ("--steps", "12", "--batch-size", "40", "--lr", "0.01")


@pytest.fixture
def setup(cli, workdir: Path) -> Path:
    write_method_inputs(workdir)
    return workdir


def _sorted_top_k(values: dict[str, torch.Tensor], allowed: dict[str, torch.Tensor], k: int):
    """Keep the k largest |w| among allowed entries, by a full sort (ties: earliest first)."""
    flat = torch.cat([values[n].abs().reshape(-1) for n in values])
    ok = torch.cat([allowed[n].reshape(-1) for n in values])
    order = sorted((i for i in range(flat.numel()) if ok[i]), key=lambda i: (-float(flat[i]), -i))
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    out, start = {}, 0
    for name, tensor in values.items():
        out[name] = keep[start : start + tensor.numel()].reshape(tensor.shape)
        start += tensor.numel()
    return out


def test_projection_is_a_top_k_by_sorting():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    with torch.no_grad():
        module[0].weight[0, :3] = 0.0  # already pruned: never selected
        module[2].weight[1, 1] = module[2].weight[0, 0]  # a tie
    data = Dataset(torch.zeros(4, 6), torch.zeros(4, dtype=torch.int64))
    job = make_job(module, data, 0.6, Iht, TrainSettings(steps=1))
    allowed = job.masks()
    support = top_k_support(job, allowed, module)
    values = {n: module.get_parameter(n).detach() for n in job.names}
    k = job.total - job.target_zeros
    expected = _sorted_top_k(values, allowed, k)
    kept = sum(int(support[n].sum()) for n in job.names)
    assert kept == k
    largest_dropped = max(float(values[n][allowed[n] & ~support[n]].abs().max()) for n in values)
    smallest_kept = min(float(values[n][support[n]].abs().min()) for n in values)
    assert smallest_kept >= largest_dropped
    for n in job.names:
        # equal except where the tie at the threshold could go either way
        differ = support[n] != expected[n]
        assert bool((values[n][differ].abs() == smallest_kept).all())


@pytest.mark.parametrize("scope", ["layer", "erk"])
def test_per_layer_projection_uses_the_scope_counts(scope):
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    data = Dataset(torch.zeros(4, 6), torch.zeros(4, dtype=torch.int64))
    job = make_job(module, data, 0.6, Iht, TrainSettings(steps=1))
    job.scope = scope
    support = top_k_support(job, job.masks(), module)
    counts = keep_counts(scope, {n: tuple(module.get_parameter(n).shape) for n in job.names}, 0.6)
    for name in job.names:
        values = module.get_parameter(name).detach().abs().reshape(-1)
        top = torch.sort(values, descending=True).indices[: counts[name]]
        assert set(support[name].reshape(-1).nonzero()[:, 0].tolist()) == set(top.tolist())
    assert sum(int(support[n].sum()) for n in job.names) == job.total - job.target_zeros


def test_pruned_weights_come_back_when_the_gradient_asks():
    """Labels depend on inputs 0 and 1 only, but the init's largest weights sit on inputs 2–7:
    the support of the init is wrong, and IHT must move it onto the informative columns."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=generator)
    y = (x[:, 0] > x[:, 1]).long()
    module = nn.Sequential(nn.Linear(8, 2, bias=False))
    with torch.no_grad():
        module[0].weight.copy_(0.01 * torch.ones(2, 8))
        module[0].weight[:, 2:] = 0.5
    job = make_job(
        module,
        Dataset(x, y),
        0.75,
        Iht,
        TrainSettings(steps=60, batch_size=100, lr=0.05, optimizer="sgd"),
        project_every=5,
    )
    result = Iht().run(job)
    support = result.masks["0.weight"]
    assert int(support.sum()) == 4
    assert bool(support[:, :2].all()), support


def test_iht_cli_exact_count_and_report(cli, setup):
    result = cli(
        "prune",
        "init.safetensors",
        "-m",
        "iht",
        "-s",
        "0.7",
        "--data",
        "data.npz",
        *TRAIN,
        "--project-every",
        "3",
        "--json",
        "-o",
        "out.safetensors",
    )
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    tensors = load_file(setup / "out.safetensors")
    zeros = sum(int((tensors[f"fc{i}.weight"] == 0).sum()) for i in (1, 2, 3))
    assert zeros == round(0.7 * 352)
    assert report["pruning"]["options"]["project_every"] == 3
    row = report["pruning"]["rounds"][-1]
    assert row["projections"] == 3  # after steps 3, 6, 9 (not the last: nothing trains after)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--project-every", "0", "--project-every"), ("--iht-steps", "-1", "--iht-steps")],
)
def test_iht_bad_options(cli, setup, flag, value, message):
    args = (
        "prune", "init.safetensors", "-m", "iht", "-s", "0.5", "--data", "data.npz", *TRAIN,
        flag, value, "-o", "out.safetensors",
    )  # fmt: skip
    run_refused(cli, setup, args, 2, message)
