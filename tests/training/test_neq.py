"""NEq: frozen neurons get no update; with ε = 0 nothing is frozen and training is unchanged."""

from __future__ import annotations

import torch
from torch import nn

from prunecli.training.hooks import TrainHook
from prunecli.training.loop import train
from prunecli.training.neq import NeqHook
from prunecli.training.settings import TrainSettings
from tests.conftest import report_of
from tests.training.test_training import half_masks, toy_data, toy_net

SETTINGS = dict(epochs=5, batch_size=20, lr=0.01, optimizer="adam")


class KeepEpoch(TrainHook):
    def __init__(self, epoch: int) -> None:
        self.epoch, self.weights = epoch, None

    def on_epoch_end(self, state) -> None:
        if state.epoch == self.epoch:
            self.weights = {k: v.detach().clone() for k, v in state.module.state_dict().items()}


def test_eps_zero_freezes_nothing_and_changes_nothing():
    plain, with_neq = toy_net(), toy_net()
    data = toy_data()
    train(plain, half_masks(plain), data, TrainSettings(**SETTINGS))
    hook = NeqHook(eps=0.0)
    result = train(with_neq, half_masks(with_neq), data, TrainSettings(**SETTINGS), hooks=[hook])
    for a, b in zip(plain.state_dict().values(), with_neq.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert all(row.extra["neq_frozen"] == 0 for row in result.history)
    assert result.summaries["neq"]["backward_saved"] == 0


def test_frozen_neurons_keep_weights_bias_and_optimizer_state():
    net = toy_net()
    keep = KeepEpoch(2)
    hook = NeqHook(eps=1e9)  # every neuron is frozen from the first velocity on (epoch 3)
    result = train(net, half_masks(net), toy_data(), TrainSettings(**SETTINGS), hooks=[hook, keep])
    assert [row.extra["neq_frozen"] for row in result.history] == [0, 1, 1, 1, 1]
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, keep.weights[name]), name
    # every weight-gradient entry was skipped in epochs 3-5: 3 of the 5 epochs' steps
    assert result.summaries["neq"]["backward_saved"] == 3 / 5


def test_phi_is_one_minus_the_cosine_over_the_slice():
    """The first φ of each neuron, recomputed by hand from two forward passes."""
    net = nn.Sequential(nn.Linear(6, 4))
    data = toy_data()
    hook = NeqHook(eps=0.0, samples=50)
    before = {}

    class Before(TrainHook):
        def on_start(self, state) -> None:
            before.update({k: v.clone() for k, v in state.module.state_dict().items()})

    train(net, {}, data, TrainSettings(epochs=1, batch_size=20), hooks=[Before(), hook])
    x = hook.slice
    old = x @ before["0.weight"].T + before["0.bias"]
    new = net(x).detach()
    cos = (old * new).sum(0) / (old.norm(dim=0) * new.norm(dim=0))
    assert torch.allclose(hook.layers[0].phi, 1 - cos, atol=1e-6)


def test_retrain_neq_reports_frozen_fraction_and_work_saved(cli, workdir):
    import numpy as np

    from tests.conftest import SMALL_MLP, write_zoo

    write_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)).astype(np.float32)
    np.savez(workdir / "d.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    result = cli(
        "retrain",
        "m.safetensors",
        "--data",
        "d.npz",
        "--epochs",
        4,
        "--neq",
        "--neq-eps",
        1e9,
        "--val-fraction",
        0.2,
        "-o",
        "o.safetensors",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    training = report_of(result)["training"]
    assert [row["neq_frozen"] for row in training["history"]] == [0, 1, 1, 1]
    assert training["neq"]["backward_saved"] == 0.5
