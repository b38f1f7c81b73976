"""Channel groups from the fx graph, allocation and shrinking (issue 15, parts 1, 3 and 4).

The equivalence check is independent of the shrinking code: the original module, with the
removed units' producer rows (conv/Linear rows, biases, BatchNorm scale and shift) set to zero,
computes exactly what the smaller module computes; both must agree within 1e-5."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunecli.errors import BadInput, Unsupported
from prunecli.models import zoo
from prunecli.structure.allocate import allocate, unit_scores
from prunecli.structure.groups import unit_index
from prunecli.structure.shrink import shrink_module
from prunecli.structure.trace import find_groups


def _randomise_bn(module: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-1, 1)
    return module.eval()


def _zeroed_reference(module: nn.Module, groups, kept) -> nn.Module:  # noqa: ANN001
    """The original with each removed unit's output forced to zero (its producer side zeroed)."""
    ref = copy.deepcopy(module)
    state = ref.state_dict()
    with torch.no_grad():
        for group in groups:
            keep = torch.zeros(group.size, dtype=torch.bool)
            keep[kept[group.name]] = True
            drop = torch.nonzero(~keep).flatten()
            for piece in group.slices:
                if piece.dim == 0 and not piece.tensor.endswith(("running_mean", "running_var")):
                    state[piece.tensor].index_fill_(0, unit_index(drop, piece.block), 0.0)
    return ref


def _prunable(module: nn.Module) -> list[str]:
    return [
        f"{n}.weight" for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def _prune(
    module: nn.Module, x: torch.Tensor, sparsity: float, scope: str = "global", round_to=None
):  # noqa: ANN001, ANN202
    groups = find_groups(module, x[:2])
    names = _prunable(module)
    scores = {n: module.state_dict()[n].abs() for n in names}
    allocation = allocate(
        groups, unit_scores(groups, scores), _shapes(module), names, sparsity, scope, round_to
    )
    return groups, names, allocation


def test_resnet20_groups_are_the_inner_convs_and_one_tied_group_per_stage() -> None:
    module = zoo.build_arch("resnet20").module
    groups = find_groups(module, torch.randn(2, 3, 32, 32))
    inner = sorted(g.name for g in groups if len(g.producers) == 1)
    assert inner == sorted(f"layers.{s}.{b}.conv1" for s in range(3) for b in range(3))
    tied = [g for g in groups if len(g.producers) > 1]
    # stage 0: the stem conv and the three blocks' conv2 (identity shortcuts) add together;
    # stages 1 and 2: the projection shortcut conv and the three conv2
    assert sorted(tuple(g.producers) for g in tied) == [
        ("conv1", "layers.0.0.conv2", "layers.0.1.conv2", "layers.0.2.conv2"),
        ("layers.1.0.conv2", "layers.1.0.shortcut.0", "layers.1.1.conv2", "layers.1.2.conv2"),
        ("layers.2.0.conv2", "layers.2.0.shortcut.0", "layers.2.1.conv2", "layers.2.2.conv2"),
    ]
    last = next(g for g in tied if g.size == 64)
    assert "fc.weight" in {p.tensor for p in last.slices}  # read by the classifier after pooling


def test_vgg16_has_one_group_per_conv_and_the_classifier_stays() -> None:
    module = zoo.build_arch("vgg16").module
    groups = find_groups(module, torch.randn(2, 3, 32, 32))
    convs = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    assert [g.name for g in groups] == convs
    first = groups[0]
    assert {(p.tensor, p.dim) for p in first.slices} == {
        ("features.0.weight", 0),
        ("features.1.weight", 0),
        ("features.1.bias", 0),
        ("features.1.running_mean", 0),
        ("features.1.running_var", 0),
        ("features.3.weight", 1),
    }


@pytest.mark.parametrize("arch", ["resnet20", "lenet5", "conv2"])
def test_shrunk_model_equals_original_with_removed_outputs_zeroed(arch: str) -> None:
    built = zoo.build_arch(arch)
    module = _randomise_bn(built.module)
    x = torch.randn(4, *built.input_shape)
    groups, names, allocation = _prune(module, x, 0.5)
    reference = _zeroed_reference(module, groups, allocation.kept)
    with torch.no_grad():
        expected = reference(x)
        shrink_module(module, groups, allocation.kept)
        got = module(x)
    assert sum(p.numel() for p in module.parameters()) < sum(
        p.numel() for p in reference.parameters()
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


class _Functional(nn.Module):
    """Functional ops the tracer must follow: F.relu, a residual `+`, x.mean, torch.flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.a(x))
        h = h + self.b(h)  # ties a and b
        h = F.max_pool2d(F.relu(self.c(h)), 2)
        return self.fc(torch.flatten(h, 1))


def test_functional_ops_residual_and_flatten_blocks() -> None:
    module = _Functional().eval()
    x = torch.randn(3, 3, 8, 8)
    groups = find_groups(module, x[:2])
    assert sorted(tuple(g.producers) for g in groups) == [("a", "b"), ("c",)]
    c = next(g for g in groups if g.producers == ["c"])
    assert ("fc.weight", 1, 16) in {(p.tensor, p.dim, p.block) for p in c.slices}
    groups, _, allocation = _prune(module, x, 0.4)
    reference = _zeroed_reference(module, groups, allocation.kept)
    with torch.no_grad():
        expected = reference(x)
        shrink_module(module, groups, allocation.kept)
        torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-5)
    assert module.fc.in_features == module.c.out_channels * 16


class _Frozen(nn.Module):
    """A concatenation and a LayerNorm: channels the tracer must leave alone."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.c = nn.Linear(6, 5)
        self.head = nn.Linear(12 + 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.a(x), self.c(self.norm(self.b(x))).relu(), self.a(x)], 1))


def test_concatenation_layer_norm_and_output_are_frozen() -> None:
    assert find_groups(_Frozen().eval(), torch.randn(2, 4)) == []


def test_untraceable_module_names_it() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(Unsupported, match="torch.fx cannot trace .*Branchy"):
        find_groups(Branchy(), torch.randn(2, 4))


def test_global_allocation_meets_the_target_to_within_one_step() -> None:
    module = zoo.build_arch("resnet20").module.eval()
    x = torch.randn(2, 3, 32, 32)
    names = _prunable(module)
    before = sum(module.state_dict()[n].numel() for n in names)
    groups, _, allocation = _prune(module, x, 0.5)
    shrink_module(module, groups, allocation.kept)
    after = sum(module.state_dict()[n].numel() for n in names)
    assert before - after == allocation.removed
    assert allocation.total == before and allocation.target == round(0.5 * before)
    # one channel of the widest tied group costs at most 4 convs' rows and columns of 64·9
    largest_step = max(
        sum(math.prod(s) // g.size for s in (module.state_dict()[p.tensor].shape for p in g.slices))
        for g in groups
    )
    assert abs(allocation.removed - allocation.target) <= largest_step


def test_layer_scope_with_round_to_keeps_multiples() -> None:
    module = zoo.build_arch("resnet20").module.eval()
    groups, _, allocation = _prune(module, torch.randn(2, 3, 32, 32), 0.4, "layer", round_to=8)
    assert all(count % 8 == 0 and count >= 8 for count in allocation.counts.values())
    fractions = {round(allocation.counts[g.name] / g.size, 2) for g in groups}
    assert len(fractions) <= 2  # every group keeps (about) the same share, rounded to 8
    assert abs(allocation.removed / allocation.total - 0.4) < 0.08


def test_a_sparsity_that_would_empty_a_layer_is_refused_with_the_most_possible() -> None:
    module = zoo.build_arch("lenet5").module.eval()
    with pytest.raises(BadInput, match=r"would remove whole layers: .* at most \d+\.\d% "):
        _prune(module, torch.randn(2, 1, 28, 28), 0.999)


def test_every_group_keeps_at_least_one_unit_at_the_limit() -> None:
    module = zoo.build_arch("lenet5").module.eval()
    groups, names, _ = _prune(module, torch.randn(2, 1, 28, 28), 0.1)
    shapes = _shapes(module)
    from prunecli.structure.groups import count_params, slices_by_tensor

    table = slices_by_tensor(groups)
    total = count_params(shapes, table, {}, names)
    floor = count_params(shapes, table, {g.name: 1 for g in groups}, names)
    limit = (total - floor) / total
    scores = {n: module.state_dict()[n].abs() for n in names}
    allocation = allocate(groups, unit_scores(groups, scores), shapes, names, limit - 1e-6)
    assert min(allocation.counts.values()) == 1


class _MobileBlock(nn.Module):
    """Depthwise-separable conv with squeeze-and-excitation, then a grouped conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.dw, self.bn1 = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16)
        self.se1, self.se2 = nn.Linear(16, 4), nn.Linear(4, 16)
        self.pw, self.bn2 = nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24)
        self.grouped = nn.Conv2d(24, 24, 3, padding=1, groups=4)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn0(self.stem(x)))
        x = F.relu(self.bn1(self.dw(x)))
        gate = torch.sigmoid(self.se2(F.relu(self.se1(x.mean((2, 3))))))
        x = F.relu(self.bn2(self.pw(x * gate[:, :, None, None])))
        return self.head(F.adaptive_avg_pool2d(self.grouped(x), 1).flatten(1))


def test_depthwise_and_squeeze_excitation_tie_and_grouped_convs_freeze() -> None:
    module = _randomise_bn(_MobileBlock())
    x = torch.randn(4, 3, 8, 8)
    groups = find_groups(module, x[:2])
    # the SE gate multiplies the stem's channels: se2's rows go with them; the depthwise conv
    # keeps them; pw's output feeds a grouped conv, which freezes it
    assert sorted(tuple(g.producers) for g in groups) == [("se1",), ("stem", "se2")]
    stem = next(g for g in groups if "stem" in g.producers)
    assert {"dw.weight", "bn1.weight", "se1.weight", "pw.weight"} <= {p.tensor for p in stem.slices}
    groups, _, allocation = _prune(module, x, 0.3, "layer")
    reference = _zeroed_reference(module, groups, allocation.kept)
    with torch.no_grad():
        expected = reference(x)
        shrink_module(module, groups, allocation.kept)
        torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-5)
    assert module.dw.groups == module.dw.out_channels == module.stem.out_channels < 16
