"""Reconstruction (issue 15, part 5): the ridge refit against direct least squares, and a shrunk
module refit on calibration data tracks the dense one more closely than without."""

from __future__ import annotations

import copy

import torch
from torch import nn

from prunecli.structure.allocate import allocate, unit_scores
from prunecli.structure.reconstruct import Refit, conv_rows, conv_targets
from prunecli.structure.refit import refit_layers
from prunecli.structure.shrink import shrink_module
from prunecli.structure.trace import find_groups


def test_refit_without_damping_is_ordinary_least_squares() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 7, generator=g, dtype=torch.float64)
    y = torch.randn(200, 3, generator=g, dtype=torch.float64)
    stats = Refit(7, 3)
    stats.add(x[:120], y[:120])
    stats.add(x[120:], y[120:])  # accumulation over batches
    weight, bias = stats.solve(damp=0.0)
    augmented = torch.cat([x, torch.ones(200, 1, dtype=torch.float64)], 1)
    direct = torch.linalg.lstsq(augmented, y).solution
    torch.testing.assert_close(weight, direct[:7].T, atol=1e-6, rtol=0)
    torch.testing.assert_close(bias, direct[7], atol=1e-6, rtol=0)


def test_ridge_refit_matches_the_closed_form() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    y = torch.randn(50, 2, generator=g, dtype=torch.float64)
    stats = Refit(4, 2, bias=False)
    stats.add(x, y)
    weight, bias = stats.solve(damp=0.5)
    lam = 0.5 * float((x * x).sum(0).mean())
    closed = torch.linalg.solve(x.T @ x + lam * torch.eye(4, dtype=torch.float64), x.T @ y)
    assert bias is None
    torch.testing.assert_close(weight, closed.T, atol=1e-5, rtol=0)  # float32 products


def test_conv_rows_times_flat_weight_is_the_convolution() -> None:
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False)
    x = torch.randn(2, 3, 9, 9)
    rows = conv_rows(x, conv)
    torch.testing.assert_close(
        rows @ conv.weight.reshape(5, -1).T, conv_targets(conv(x)), atol=1e-5, rtol=0
    )


def test_refit_brings_a_shrunk_network_closer_to_the_dense_one() -> None:
    torch.manual_seed(0)
    dense = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 6),
    ).eval()  # fmt: skip
    data = [torch.randn(32, 3, 8, 8) for _ in range(4)]
    groups = find_groups(dense, data[0][:2])
    names = [n for n in dense.state_dict() if n.endswith("weight")]
    scores = {n: dense.state_dict()[n].abs() for n in names}
    shapes = {n: tuple(t.shape) for n, t in dense.state_dict().items()}
    allocation = allocate(groups, unit_scores(groups, scores), shapes, names, 0.5, "layer")
    plain = copy.deepcopy(dense)
    shrink_module(plain, groups, allocation.kept)
    refit = copy.deepcopy(plain)
    layers = refit_layers(dense, refit, groups, allocation.kept, lambda: iter(data))
    assert layers == ["2", "6", "8"]  # every layer that lost inputs, in graph order
    held_out = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        target = dense(held_out)
        error_plain = (plain(held_out) - target).pow(2).mean()
        error_refit = (refit(held_out) - target).pow(2).mean()
    assert error_refit < 0.5 * error_plain, (float(error_refit), float(error_plain))
