"""Per-layer budgets: ERK against an independent re-implementation of RigL's solver, hand-worked
examples, and exact totals for every scope."""

from __future__ import annotations

import math

import pytest

from prunecli.errors import BadInput
from prunecli.pruning.allocation import erk_densities, keep_counts, prune_count


def rigl_erk(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """RigL's ERK solver as METHODS.md describes it (sparse_utils.get_sparsities in RigL):
    raw_l = sum(dims)/prod(dims); eps = kept budget / sum(raw_l·n_l) over the non-dense layers;
    while eps·max(raw) > 1, the layer(s) with the largest raw probability become dense."""
    dense: set[str] = set()
    while True:
        rhs = 0.0
        divisor = 0.0
        raw: dict[str, float] = {}
        for name, shape in shapes.items():
            n_param = math.prod(shape)
            if name in dense:
                rhs -= n_param * (1.0 - density)  # RigL: rhs -= n_zeros
            else:
                rhs += n_param * density  # RigL: rhs += n_ones
                raw[name] = sum(shape) / n_param
                divisor += raw[name] * n_param
        eps = rhs / divisor
        max_raw = max(raw.values())
        if max_raw * eps > 1:
            dense |= {name for name, value in raw.items() if value == max_raw}
            continue
        return {name: 1.0 if name in dense else eps * raw[name] for name in shapes}


RESNET_LIKE = {
    "conv1": (16, 3, 3, 3),
    "layer1.conv": (16, 16, 3, 3),
    "layer2.conv": (32, 16, 3, 3),
    "layer2.down": (32, 16, 1, 1),
    "layer3.conv": (64, 32, 3, 3),
    "layer3.conv2": (64, 64, 3, 3),
    "fc": (10, 64),
}
VGG_LIKE = {
    "c1": (64, 3, 3, 3),
    "c2": (128, 64, 3, 3),
    "c3": (256, 128, 3, 3),
    "c4": (512, 256, 3, 3),
    "c5": (512, 512, 3, 3),
    "fc": (10, 512),
}
MLP_LIKE = {"fc1": (300, 784), "fc2": (100, 300), "fc3": (10, 100)}
TINY = {"a": (1, 1), "b": (2, 3), "c": (3, 1)}
SHAPE_SETS = {"resnet": RESNET_LIKE, "vgg": VGG_LIKE, "mlp": MLP_LIKE, "tiny": TINY}
SPARSITIES = [0.0, 0.1, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999]


@pytest.mark.parametrize("shapes", SHAPE_SETS.values(), ids=SHAPE_SETS.keys())
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_erk_densities_match_rigl(shapes: dict, sparsity: float) -> None:
    got = erk_densities(shapes, 1.0 - sparsity)
    expected = rigl_erk(shapes, 1.0 - sparsity)
    assert list(got) == list(shapes)
    for name in shapes:
        assert got[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name
        assert 0.0 <= got[name] <= 1.0
    # the kept budget is met in expectation
    kept = sum(got[name] * math.prod(shape) for name, shape in shapes.items())
    total = sum(math.prod(shape) for shape in shapes.values())
    assert kept == pytest.approx((1.0 - sparsity) * total, rel=1e-9)


@pytest.mark.parametrize("shapes", SHAPE_SETS.values(), ids=SHAPE_SETS.keys())
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_erk_keep_counts_exact_and_near_density(shapes: dict, sparsity: float) -> None:
    counts = keep_counts("erk", shapes, sparsity)
    assert counts is not None and list(counts) == list(shapes)
    total = sum(math.prod(shape) for shape in shapes.values())
    assert sum(counts.values()) == total - round(sparsity * total)
    reference = rigl_erk(shapes, 1.0 - sparsity)
    for name, shape in shapes.items():
        n = math.prod(shape)
        target = reference[name] * n
        assert 0 <= counts[name] <= n
        # rounded to a neighbouring integer of the real-valued ERK target
        assert math.floor(target - 1e-6) <= counts[name] <= math.ceil(target + 1e-6), name
        if reference[name] == 1.0:  # every capped layer is fully dense
            assert counts[name] == n, name


def test_erk_capping_happens_and_capped_layers_are_dense() -> None:
    # VGG at 90% sparsity: the first conv and the classifier have the largest sum/prod ratios
    # and would exceed density 1, so RigL makes both dense and re-solves eps over the rest
    reference = rigl_erk(VGG_LIKE, 0.1)
    capped = {name for name, d in reference.items() if d == 1.0}
    assert capped == {"c1", "fc"}
    densities = erk_densities(VGG_LIKE, 0.1)
    assert {name for name, d in densities.items() if d == 1.0} == capped
    counts = keep_counts("erk", VGG_LIKE, 0.9)
    assert counts is not None
    assert counts["c1"] == 64 * 3 * 3 * 3 and counts["fc"] == 10 * 512
    # a 2% budget is too small to cap anything in the ResNet-like set
    assert all(d < 1.0 for d in erk_densities(RESNET_LIKE, 0.02).values())


def test_erk_two_layers_with_capping_by_hand() -> None:
    # a: (2, 2): n = 4, raw = (2 + 2) / 4 = 1.0;  b: (10, 10): n = 100, raw = 20 / 100 = 0.2
    # density 0.5 -> keep 52 of 104.
    # pass 1: eps = 52 / (1.0·4 + 0.2·100) = 52 / 24 = 2.1667 -> a would get 2.1667 > 1: dense
    # pass 2: eps = (52 - 4) / (0.2·100) = 48 / 20 = 2.4 -> b gets 2.4·0.2 = 0.48 -> 48 kept
    shapes = {"a": (2, 2), "b": (10, 10)}
    assert erk_densities(shapes, 0.5) == pytest.approx({"a": 1.0, "b": 0.48}, rel=1e-12)
    assert keep_counts("erk", shapes, 0.5) == {"a": 4, "b": 48}


def test_erk_two_layers_without_capping_by_hand() -> None:
    # a: (4, 6): n = 24, raw = 10 / 24;  b: (8, 12): n = 96, raw = 20 / 96
    # density 0.25 -> keep 30 of 120; eps = 30 / (10 + 20) = 1
    # -> a keeps 10 (density 10/24 = 0.41667), b keeps 20 (density 20/96 = 0.20833)
    shapes = {"a": (4, 6), "b": (8, 12)}
    assert erk_densities(shapes, 0.25) == pytest.approx({"a": 10 / 24, "b": 20 / 96}, rel=1e-12)
    assert keep_counts("erk", shapes, 0.75) == {"a": 10, "b": 20}


def test_erk_conv_counts_kernel_dims_by_hand() -> None:
    # ERK (not ER) sums all four dims: conv (4, 2, 3, 3): n = 72, raw = 12 / 72 = 1/6
    # linear (6, 12): n = 72, raw = 18 / 72 = 1/4; density 0.5 -> keep 72 of 144
    # eps = 72 / (12 + 18) = 2.4 -> conv 0.4 (28.8 kept), linear 0.6 (43.2 kept)
    # largest remainder: floors 28 + 43 = 71, one short; fractions .8 vs .2 -> conv gets 29
    shapes = {"conv": (4, 2, 3, 3), "fc": (6, 12)}
    assert erk_densities(shapes, 0.5) == pytest.approx({"conv": 0.4, "fc": 0.6}, rel=1e-12)
    assert keep_counts("erk", shapes, 0.5) == {"conv": 29, "fc": 43}


def test_erk_zero_sparsity_keeps_everything() -> None:
    for shapes in SHAPE_SETS.values():
        counts = keep_counts("erk", shapes, 0.0)
        assert counts == {name: math.prod(shape) for name, shape in shapes.items()}


def test_layer_scope_largest_remainder_by_hand() -> None:
    # three layers of 10, S = 0.25: N = 30, round(7.5) = 8 zeros (half to even), keep 22;
    # each target 7.5 -> floors 21, one short -> equal remainders: the earliest layer gets it
    shapes = {"a": (2, 5), "b": (5, 2), "c": (10, 1)}
    assert keep_counts("layer", shapes, 0.25) == {"a": 8, "b": 7, "c": 7}
    # S = 0.3 on 10 + 20: targets 7 and 14 exactly, keep 21
    assert keep_counts("layer", {"a": (10, 1), "b": (4, 5)}, 0.3) == {"a": 7, "b": 14}


@pytest.mark.parametrize("shapes", SHAPE_SETS.values(), ids=SHAPE_SETS.keys())
@pytest.mark.parametrize("sparsity", SPARSITIES + [0.33, 0.5 + 1e-9, 0.123456])
def test_layer_scope_counts(shapes: dict, sparsity: float) -> None:
    counts = keep_counts("layer", shapes, sparsity)
    assert counts is not None
    total = sum(math.prod(shape) for shape in shapes.values())
    assert sum(counts.values()) == total - round(sparsity * total)
    for name, shape in shapes.items():
        target = (1.0 - sparsity) * math.prod(shape)
        assert math.floor(target - 1e-6) <= counts[name] <= math.ceil(target + 1e-6), name


def test_global_scope_has_no_per_layer_counts() -> None:
    assert keep_counts("global", MLP_LIKE, 0.9) is None


def test_unknown_scope_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown scope 'erdos'"):
        keep_counts("erdos", MLP_LIKE, 0.9)


@pytest.mark.parametrize(
    ("sparsity", "total", "zeros"),
    [
        (0.0, 7, 0),
        (0.5, 3, 2),
        (0.5, 5, 2),
        (0.1, 15, 2),
        (0.3, 15, 4),
        (0.9, 10, 9),
        (0.999, 1, 1),
    ],
)
def test_prune_count_by_hand(sparsity: float, total: int, zeros: int) -> None:
    assert prune_count(sparsity, total) == zeros
