"""The built-in architecture zoo: every entry builds, runs, and has the published shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunecli.errors import BadInput
from prunecli.models.zoo import ArchEntry, build_arch, list_archs


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(cin: int, cout: int, k: int, bias: bool = False) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def linear(fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + fan_out


@pytest.mark.parametrize("entry", list_archs(), ids=lambda e: e.name)
def test_builds_and_runs(entry: ArchEntry) -> None:
    assert entry.summary
    torch.manual_seed(0)
    model = build_arch(entry.name)
    model.module.eval()
    with torch.no_grad():
        out = model.module(torch.randn(2, *model.input_shape))
    assert out.shape == (2, model.num_classes)
    # weights of two or more dimensions are exactly the prunable Linear/Conv2d weights
    prunable = {
        f"{name}.weight"
        for name, m in model.module.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    }
    matrices = {n for n, p in model.module.named_parameters() if p.dim() >= 2}
    assert prunable == matrices


@pytest.mark.parametrize("name", ["mlp", "lenet5", "conv2", "resnet20", "vgg11"])
def test_init_is_deterministic_under_seed(name: str) -> None:
    torch.manual_seed(1)
    a = build_arch(name).module.state_dict()
    torch.manual_seed(1)
    b = build_arch(name).module.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lenet300_param_count() -> None:
    model = build_arch("lenet300")
    assert model.input_shape == (1, 28, 28)
    assert n_params(model.module) == linear(784, 300) + linear(300, 100) + linear(100, 10)
    assert n_params(model.module) == 266_610


def test_mlp_custom_widths() -> None:
    model = build_arch("mlp", {"widths": [40, 100, 100, 10]})
    assert model.input_shape == (40,)
    assert model.num_classes == 10
    assert n_params(model.module) == 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    assert model.module(torch.randn(2, 40)).shape == (2, 10)


def test_lenet5_param_count() -> None:
    expected = (
        conv(1, 6, 5, bias=True)
        + conv(6, 16, 5, bias=True)
        + linear(400, 120)
        + linear(120, 84)
        + linear(84, 10)
    )
    assert n_params(build_arch("lenet5").module) == expected == 61_706


def test_conv2_param_count() -> None:
    expected = (
        conv(3, 64, 3, bias=True)
        + conv(64, 64, 3, bias=True)
        + linear(64 * 16 * 16, 256)
        + linear(256, 256)
        + linear(256, 10)
    )
    assert n_params(build_arch("conv2").module) == expected


def _cifar_resnet_params(widths: list[int], blocks: list[int], num_classes: int) -> int:
    total = conv(3, widths[0], 3) + bn(widths[0])
    cin = widths[0]
    for cout, n in zip(widths, blocks, strict=True):
        for _ in range(n):
            total += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
            if cin != cout:
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    return total + linear(cin, num_classes)


def test_resnet_param_counts() -> None:
    assert n_params(build_arch("resnet20").module) == _cifar_resnet_params(
        [16, 32, 64], [3, 3, 3], 10
    )
    assert n_params(build_arch("resnet20").module) == 272_474
    # kuangliu/pytorch-cifar ResNet18: 11,173,962 parameters
    assert n_params(build_arch("resnet18").module) == 11_173_962


def test_vgg16_layer_shapes() -> None:
    model = build_arch("vgg16", {"num_classes": 100})
    plan = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    cins = [3] + plan[:-1]
    expected = [(cout, cin, 3, 3) for cin, cout in zip(cins, plan, strict=True)] + [(100, 512)]
    layers = [m for m in model.module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [tuple(m.weight.shape) for m in layers] == expected
    assert all(m.bias is None for m in layers if isinstance(m, nn.Conv2d))
    assert model.num_classes == 100


def test_unknown_arch_suggests_neighbour() -> None:
    with pytest.raises(BadInput) as info:
        build_arch("vgg17")
    assert "vgg16" in str(info.value) or "vgg19" in str(info.value)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("mlp", {"widths": [5]}),
        ("mlp", {"widths": [5, 0]}),
        ("mlp", {"widths": "784,10"}),
        ("vgg16", {"bogus": 1}),
        ("resnet20", {"num_classes": 0}),
        ("lenet300", {"num_classes": 10}),
    ],
)
def test_bad_kwargs(name: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(BadInput):
        build_arch(name, kwargs)


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_torch_export(name: str) -> None:
    model = build_arch(name)
    model.module.eval()
    x = torch.randn(2, *model.input_shape)
    program = torch.export.export(model.module, (x,))
    torch.testing.assert_close(program.module()(x), model.module(x))
