"""The masked training loop: pruned weights stay exactly zero, determinism, evaluation, NaN."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunecli.data.labelled import from_arrays
from prunecli.errors import BadInput
from prunecli.training.evaluation import evaluate, split_data
from prunecli.training.hooks import TrainHook
from prunecli.training.loop import train
from prunecli.training.settings import TrainingDiverged, TrainSettings


def toy_data(n: int = 120, features: int = 6, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return from_arrays(x, y.clamp(max=classes - 1))


def toy_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def half_masks(net: nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        name: torch.rand(p.shape, generator=g) > 0.5
        for name, p in net.named_parameters()
        if name.endswith("weight")
    }


class Shrink(TrainHook):
    """At step 5, prunes more weights of layer 0 (Adam's moments for them are non-zero by then),
    and records after every later step whether any pruned weight moved off zero."""

    def __init__(self) -> None:
        self.violations = 0
        self.new_mask: torch.Tensor | None = None

    def on_step_end(self, state) -> None:
        if state.step == 5:
            keep = state.masks["0.weight"].clone()
            keep[:8] = False
            self.new_mask = keep
            state.masks = {**state.masks, "0.weight": keep}
        elif state.step > 5:
            for name, keep in state.masks.items():
                self.violations += int((state.params[name][~keep] != 0).sum())


@pytest.mark.parametrize(
    "optimizer,extra",
    [
        ("adam", {"weight_decay": 0.1}),
        ("adamw", {"weight_decay": 0.1}),
        ("sgd", {"momentum": 0.9, "weight_decay": 0.1}),
    ],
)
def test_pruned_weights_stay_zero_and_state_cannot_revive_them(optimizer, extra):
    net = toy_net()
    masks = half_masks(net)
    bias_before = net[0].bias.detach().clone()
    hook = Shrink()
    settings = TrainSettings(steps=30, batch_size=20, lr=0.05, optimizer=optimizer, **extra)
    train(net, masks, toy_data(), settings, hooks=[hook])
    assert hook.violations == 0
    final = {**masks, "0.weight": hook.new_mask}
    for name, keep in final.items():
        weight = net.get_parameter(name).detach()
        assert bool((weight[~keep] == 0).all())
        assert bool((weight[keep] != 0).all())  # survivors still train
    assert not torch.equal(net[0].bias.detach(), bias_before)  # unlisted parameters train


def test_masked_sgd_matches_a_hand_written_loop():
    """Plain SGD: w ← (w − lr·∇L)·m on the same batches, written out independently."""
    data = toy_data()
    net, ref = toy_net(), toy_net()
    masks = half_masks(net)
    settings = TrainSettings(steps=12, batch_size=30, lr=0.1, optimizer="sgd", momentum=0.0)
    train(net, masks, data, settings)
    with torch.no_grad():
        for name, keep in masks.items():
            ref.get_parameter(name).mul_(keep)
    for x, y in data.batches(30, 12, seed=0):
        ref.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        with torch.no_grad():
            for name, p in ref.named_parameters():
                p -= 0.1 * p.grad
                if name in masks:
                    p.mul_(masks[name])
    for (name, a), b in zip(net.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_same_seed_same_weights_other_seed_other_weights():
    results = []
    for seed in (3, 3, 4):
        net = toy_net()
        train(net, half_masks(net), toy_data(), TrainSettings(epochs=2, batch_size=16, seed=seed))
        results.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])


def test_history_has_one_row_per_epoch_and_a_partial_last():
    data = toy_data(n=100)
    net = toy_net()
    result = train(net, {}, data, TrainSettings(steps=25, batch_size=20, val_fraction=0.2))
    # 80 training samples → 4 steps per epoch: 6 full epochs and one of 1 step
    assert [row.step for row in result.history] == [4, 8, 12, 16, 20, 24, 25]
    assert result.steps == 25
    assert result.test_accuracy == result.history[-1].test_accuracy
    train_set, test_set = split_data(data, 0.2, 0)
    assert len(test_set) == 20 and len(train_set) == 80
    assert evaluate(net, test_set.x, test_set.y)[1] == pytest.approx(result.test_accuracy)


def test_evaluate_against_hand_computed_values():
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        net.bias.zero_()
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    loss, accuracy = evaluate(net, x, y, batch_size=2)
    # logits (2,0), (0,1), (3,1): per-sample CE = log(1+e^-2), log(1+e^1), log(1+e^2)
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.e) + math.log1p(math.exp(2))) / 3
    assert loss == pytest.approx(expected, rel=1e-6)
    assert accuracy == pytest.approx(1 / 3)


def test_nan_loss_restores_the_last_good_weights():
    net = toy_net()
    settings = TrainSettings(steps=40, batch_size=20, lr=1e12, optimizer="sgd", momentum=0.0)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    data = toy_data()
    with pytest.raises(TrainingDiverged) as caught:
        train(net, {}, data, settings)
    assert "diverged" in caught.value.message
    assert caught.value.exit_code == 2
    good = caught.value.result.history
    for tensor in net.state_dict().values():
        assert bool(torch.isfinite(tensor).all())
    if not good:  # diverged in the first epoch: the start is the last good state
        for name, tensor in net.state_dict().items():
            assert torch.equal(tensor, start[name])


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"steps": 0}, "--steps must be at least 1"),
        ({"steps": 5, "epochs": 2}, "exactly one of --epochs or --steps"),
        ({}, "exactly one of --epochs or --steps"),
        ({"steps": 5, "optimizer": "lbfgs"}, "unknown --optimizer"),
        ({"steps": 5, "lr": -1.0}, "--lr must be a positive number"),
        ({"steps": 5, "val_fraction": 1.5}, "--val-fraction"),
    ],
)
def test_impossible_settings_are_refused(changes, message):
    with pytest.raises(BadInput, match=message):
        TrainSettings(**changes).check()


def test_labels_beyond_the_outputs_are_refused():
    data = from_arrays(torch.randn(20, 6), torch.arange(20) % 5)
    with pytest.raises(BadInput, match="5 classes"):
        train(toy_net(), {}, data, TrainSettings(steps=2, batch_size=5))


def test_cosine_schedule_by_hand():
    seen = []

    class Rates(TrainHook):
        def on_step_end(self, state) -> None:
            seen.append(state.optimizer.param_groups[0]["lr"])

    settings = TrainSettings(steps=8, batch_size=20, lr=0.1, lr_schedule="cosine")
    train(toy_net(), {}, toy_data(), settings, hooks=[Rates()])
    expected = [0.05 * (1 + math.cos(math.pi * t / 8)) for t in range(1, 9)]
    assert seen == pytest.approx(expected, abs=1e-12)
