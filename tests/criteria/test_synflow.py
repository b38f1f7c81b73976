"""SynFlow (DESIGN §3), each property against an independent route: closed-form path sums on
linear chains, plain float64 autograd written here, a hand-folded BatchNorm, and the CLI."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from conftest import report_of, write_weights
from safetensors.torch import load_file, save_file
from torch import nn

from prunecli.criteria import get_criterion
from prunecli.criteria.synflow import SynFlow
from prunecli.models.loaded import META_ARCH, META_ARCH_KWARGS, Architecture, LoadedModel
from prunecli.models.zoo import build_arch
from prunecli.pruning.criterion import Criterion, Inputs, ScoreContext
from prunecli.pruning.loop import prune_model
from prunecli.topology.pathflow import cut_points

Scores = Mapping[str, torch.Tensor]


def as_loaded(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[LoadedModel, list[str]]:
    """A model as the CLI holds it: the module's tensors by name, and its prunable weights."""
    module.eval()
    tensors = dict(module.state_dict())
    names = [
        f"{name}.weight"
        for name, layer in module.named_modules()
        if isinstance(layer, (nn.Linear, nn.Conv2d))
    ]
    arch = Architecture("test", input_shape=input_shape)
    return LoadedModel(tensors, {}, "mem", "safetensors", None, module, arch), names


def zoo_loaded(arch: str, seed: int = 0, **kwargs: object) -> tuple[LoadedModel, list[str]]:
    torch.manual_seed(seed)
    built = build_arch(arch, kwargs)
    return as_loaded(built.module, built.input_shape)


def synflow_scores(model: LoadedModel, names: list[str], **options: bool) -> Scores:
    return SynFlow(**options).score(ScoreContext(model, names))


def masks_of(model: LoadedModel, names: list[str]) -> dict[str, torch.Tensor]:
    return {name: model.tensors[name] != 0 for name in names}


def randomise_batchnorm(module: nn.Module, seed: int) -> None:
    """Signed γ, shifts and running statistics far from the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                size = layer.num_features
                layer.weight.copy_(torch.rand(size, generator=generator) * 4 - 2)
                layer.bias.copy_(torch.randn(size, generator=generator))
                layer.running_mean.copy_(torch.randn(size, generator=generator))
                layer.running_var.copy_(torch.rand(size, generator=generator) * 3 + 0.05)


def single_factor(scores: Scores, reference: Scores) -> float:
    """The one positive factor f with scores == f · reference, or fail."""
    total = sum(float(scores[name].sum()) for name in reference)
    expected = sum(float(reference[name].sum()) for name in reference)
    factor = total / expected
    assert math.isfinite(factor) and factor > 0
    for name, ref in reference.items():
        torch.testing.assert_close(scores[name], ref * factor, rtol=1e-12, atol=0.0)
    return factor


# --- closed form on linear chains ------------------------------------------------------------


def chain(widths: list[int], seed: int, prune: float = 0.0) -> nn.Sequential:
    """Bias-free Linear layers with ReLUs; signed weights, a fraction ``prune`` already zero."""
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layer = nn.Linear(fan_in, fan_out, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(fan_out, fan_in, generator=generator))
            layer.weight.mul_(torch.rand(fan_out, fan_in, generator=generator) >= prune)
        layers += [layer] if i == len(widths) - 2 else [layer, nn.ReLU()]
    return nn.Sequential(*layers)


def closed_form(weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """|W_l| ⊙ (b_l a_{l-1}ᵀ): a_0 = 1, a_l = |W_l| a_{l-1}; b_L = 1, b_{l-1} = |W_l|ᵀ b_l."""
    absolute = [w.detach().double().abs() for w in weights]
    forward = [torch.ones(absolute[0].shape[1], dtype=torch.float64)]
    for w in absolute:
        forward.append(w @ forward[-1])
    backward = [torch.ones(absolute[-1].shape[0], dtype=torch.float64)]
    for w in reversed(absolute):
        backward.insert(0, w.T @ backward[0])
    return [w * torch.outer(backward[i + 1], forward[i]) for i, w in enumerate(absolute)]


def chain_names(module: nn.Sequential) -> list[str]:
    return [f"{i}.weight" for i, layer in enumerate(module) if isinstance(layer, nn.Linear)]


@pytest.mark.parametrize("prune", [0.0, 0.4])
def test_chain_scores_equal_the_closed_form(prune: float) -> None:
    module = chain([5, 7, 6, 4, 3], seed=1, prune=prune)
    model, names = as_loaded(module, (5,))
    expected = closed_form([model.tensors[name] for name in names])
    unscaled = synflow_scores(model, names, rescale=False)
    for name, ref in zip(names, expected, strict=True):
        torch.testing.assert_close(unscaled[name], ref, rtol=1e-12, atol=0.0)
        assert bool((unscaled[name][model.tensors[name] == 0] == 0).all())  # pruned: score 0
    # rescaled: the same scores up to one factor, a power of two
    factor = single_factor(synflow_scores(model, names), dict(zip(names, expected, strict=True)))
    assert math.log2(factor) == round(math.log2(factor))


@pytest.mark.parametrize("factor", [2.0**12, 1e-3, 37.0])
def test_rescaling_one_layer_leaves_the_masks_unchanged(factor: float) -> None:
    """|θ ⊙ ∂R/∂θ| scales by c for every weight when one layer's weights are multiplied by c."""
    runs = []
    for c in (1.0, factor):
        torch.manual_seed(3)
        module = build_arch("lenet5").module
        with torch.no_grad():
            module.get_submodule("conv2").weight.mul_(c)
        model, names = as_loaded(module, (1, 28, 28))
        prune_model(model, names, SynFlow(), 0.9, iterations=5)
        runs.append(masks_of(model, names))
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


# --- deep networks: rescaling ------------------------------------------------------------------

DEEP = [64] * 201  # 200 Linear layers of width 64


class ClosedFormSynFlow(Criterion):
    """Unscaled float64 SynFlow by plain matrix products (the independent route)."""

    name = "closed-form-synflow"
    summary = "test reference"
    needs = ("graph", "input_shape")

    def score(self, ctx: ScoreContext) -> Scores:
        scores = closed_form([ctx.tensor(name) for name in ctx.names])
        assert all(bool(torch.isfinite(s).all()) for s in scores), "the reference must be finite"
        return dict(zip(ctx.names, scores, strict=True))


def test_deep_mlp_scores_stay_finite_and_positive() -> None:
    model, names = zoo_loaded("mlp", widths=DEEP)
    with torch.no_grad():
        for name in names:
            model.tensors[name].mul_(16.0)  # ~64 per layer: 64^200 is far beyond float64
    assert not math.isfinite(float(closed_form([model.tensors[n] for n in names])[0].sum()))
    scores = synflow_scores(model, names)
    for name in names:
        assert bool(torch.isfinite(scores[name]).all()), name
        assert bool((scores[name] > 0).all()), name  # every weight carries paths
    prune_model(model, names, SynFlow(), 0.9, iterations=5)
    scores = synflow_scores(model, names)
    on_paths = effective_weights([model.tensors[name] != 0 for name in names])
    assert sum(int(e.sum()) for e in on_paths) > 0.09 * sum(e.numel() for e in on_paths)
    for name, effective in zip(names, on_paths, strict=True):
        assert bool(torch.isfinite(scores[name]).all()), name
        assert torch.equal(scores[name] > 0, effective), name


def effective_weights(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Kept weights on at least one input→output path, by boolean reachability."""
    reach_in = [torch.ones(masks[0].shape[1], dtype=torch.bool)]
    for mask in masks:
        reach_in.append((mask.double() @ reach_in[-1].double()) > 0)
    reach_out = [torch.ones(masks[-1].shape[0], dtype=torch.bool)]
    for mask in reversed(masks):
        reach_out.insert(0, (mask.double().T @ reach_out[0].double()) > 0)
    return [mask & torch.outer(reach_out[i + 1], reach_in[i]) for i, mask in enumerate(masks)]


def test_deep_mlp_masks_equal_an_unscaled_float64_run() -> None:
    """At initialisation the 200-layer path norm (~1e120) is finite in float64 unscaled."""
    runs = []
    for criterion in (SynFlow(), ClosedFormSynFlow()):
        model, names = zoo_loaded("mlp", widths=DEEP)
        prune_model(model, names, criterion, 0.9, iterations=8)
        runs.append(masks_of(model, names))
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


# --- residual networks: rescale only where every path passes --------------------------------------


def plain_float64_scores(
    module: nn.Module, names: list[str], input_shape: tuple[int, ...]
) -> Scores:
    """SynFlow by plain autograd: |θ|, biases zero, BatchNorm folded to |γ|/√(var+ε) by hand."""
    net = copy.deepcopy(module).double().eval()
    params = dict(net.named_parameters())
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, nn.BatchNorm2d):  # (x - 0)/√(var+ε)·|γ| + 0
                layer.running_mean.zero_()
                layer.weight.abs_()
                layer.bias.zero_()
        for name, param in params.items():
            if name in names:
                param.abs_()
            elif name.endswith("bias"):
                param.zero_()
    output = net(torch.ones((1, *input_shape), dtype=torch.float64))
    grads = torch.autograd.grad(output.sum(), [params[name] for name in names])
    return {name: (params[name] * g).abs().detach() for name, g in zip(names, grads, strict=True)}


def test_resnet20_rescaled_scores_are_the_unscaled_ones_times_one_power_of_two() -> None:
    model, names = zoo_loaded("resnet20")
    randomise_batchnorm(model.module, seed=5)
    criterion = SynFlow()
    scaled = criterion.score(ScoreContext(model, names))
    unscaled = synflow_scores(model, names, rescale=False)
    total = sum(float(scaled[name].sum()) for name in names)
    ratio = sum(float(unscaled[name].sum()) for name in names) / total
    assert ratio != 1.0 and math.log2(ratio) == round(math.log2(ratio))  # it did rescale
    for name in names:  # bit for bit: powers of two are exact
        assert torch.equal(scaled[name] * ratio, unscaled[name]), name
    # and both agree with plain autograd, which knows nothing of path networks
    single_factor(unscaled, plain_float64_scores(model.module, names, (3, 32, 32)))


def test_rescaling_inside_a_residual_branch_would_change_the_ranking() -> None:
    """Why the cut points matter: dividing each conv's output by its own maximum (a naive
    per-layer rescaling) weighs branch paths against skip paths differently."""
    model, names = zoo_loaded("resnet20")
    reference = plain_float64_scores(model.module, names, (3, 32, 32))
    naive = copy.deepcopy(model.module)
    for layer in naive.modules():
        if isinstance(layer, nn.Conv2d):
            layer.register_forward_hook(lambda _m, _i, out: out / out.detach().amax())
    scores = plain_float64_scores(naive, names, (3, 32, 32))
    ratios = torch.cat([(scores[n] / reference[n])[reference[n] > 0] for n in names])
    assert float(ratios.max() / ratios.min()) > 1.5


def test_cut_points_of_a_residual_block() -> None:
    """source → conv(0) → relu(1) → conv(2) → add(3, source) → relu(4); a side branch off 1."""
    from prunecli.topology.pathflow import _Op

    ops = [
        _Op(None, frozenset({-1}), True),
        _Op(None, frozenset({0}), True),
        _Op(None, frozenset({1}), True),
        _Op(None, frozenset({2, -1}), True),
        _Op(None, frozenset({3}), True),
        _Op(None, frozenset({1}), True),  # computed but never reaches the output
    ]
    assert cut_points(ops, frozenset({4})) == {3, 4}
    # the same chain without the skip: every operation is on every path
    ops[3] = _Op(None, frozenset({2}), True)
    assert cut_points(ops, frozenset({4})) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("arch", ["resnet20", "lenet5", "mlp"])
def test_sparse_layers_compute_the_dense_scores(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers with few live weights run on those alone; torch's dense layers are the reference."""
    import prunecli.criteria.synflow as synflow

    model, names = zoo_loaded(arch)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in names:
            tensor = model.tensors[name]
            tensor.mul_(torch.rand(tensor.shape, generator=generator) < 0.04)
    runs = []
    for limit in (1.0, 0.0):  # every layer sparse, then none
        monkeypatch.setattr(synflow, "SPARSE_FRACTION", limit)
        runs.append(synflow_scores(model, names))
    for name in names:
        torch.testing.assert_close(runs[0][name], runs[1][name], rtol=1e-12, atol=0.0)


# --- BatchNorm is its positive scale --------------------------------------------------------------


class ConvNet(nn.Module):
    def __init__(self, batchnorm: bool) -> None:
        super().__init__()
        norm = nn.BatchNorm2d if batchnorm else (lambda _: nn.Identity())
        self.conv1 = nn.Conv2d(3, 6, 3, bias=True)
        self.bn1 = norm(6)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1, bias=False)
        self.bn2 = norm(5)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(20, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.head(torch.relu(self.bn2(self.conv2(x))))


def test_batchnorm_scores_equal_a_hand_folded_conv_net() -> None:
    torch.manual_seed(0)
    with_bn = ConvNet(batchnorm=True)
    randomise_batchnorm(with_bn, seed=2)
    folded = ConvNet(batchnorm=False).double()  # folded in float64: no float32 rounding
    with torch.no_grad():
        for conv, bn, target in [
            (with_bn.conv1, with_bn.bn1, folded.conv1),
            (with_bn.conv2, with_bn.bn2, folded.conv2),
        ]:
            var, gamma = bn.running_var.double(), bn.weight.double()
            scale = gamma.abs() / torch.sqrt(var + bn.eps)
            target.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
        folded.conv1.bias.copy_(with_bn.conv1.bias)
        folded.head.load_state_dict({k: v.double() for k, v in with_bn.head.state_dict().items()})
    model, names = as_loaded(with_bn, (3, 9, 9))
    reference, ref_names = as_loaded(folded, (3, 9, 9))
    assert names == ref_names
    # the score of θ is that of its folded weight |θ|·s: |θ| s ∂R/∂(|θ| s)
    single_factor(synflow_scores(model, names), synflow_scores(reference, names))


# --- the CLI ----------------------------------------------------------------------------------------


def write_resnet(path: Path) -> Path:
    torch.manual_seed(4)
    module = build_arch("resnet20").module
    randomise_batchnorm(module, seed=4)
    tensors = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt", META_ARCH: "resnet20"})
    return path


def test_score_cli_equals_plain_float64_autograd(cli, workdir: Path) -> None:
    source = write_resnet(workdir / "resnet.safetensors")
    out = workdir / "scores.safetensors"
    result = cli("score", source, "--method", "synflow", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert report_of(result)["output"]["method"] == "synflow"
    scores = load_file(out)
    torch.manual_seed(0)
    module = build_arch("resnet20").module
    module.load_state_dict(load_file(source))
    names = [n for n, layer in module.named_modules() if isinstance(layer, (nn.Conv2d, nn.Linear))]
    names = [f"{n}.weight" for n in names]
    assert sorted(scores) == sorted(names)
    reference = plain_float64_scores(module, names, (3, 32, 32))
    ours_total = sum(float(scores[n].sum()) for n in names)
    ref_total = sum(float(reference[n].sum()) for n in names)
    for name in names:
        ours, ref = scores[name].double() / ours_total, reference[name] / ref_total
        assert torch.equal(ours == 0, ref == 0), name
        nonzero = ref != 0
        assert float(((ours - ref).abs()[nonzero] / ref[nonzero]).max()) <= 1e-6, name


def test_graph_method_on_weights_only_file_exits_3(cli, workdir: Path) -> None:
    torch.manual_seed(0)
    tensors = build_arch("mlp", {"widths": [6, 5, 3]}).module.state_dict()
    source = write_weights(workdir / "weights.safetensors", dict(tensors))
    for args in (("score",), ("prune", "--sparsity", "0.5")):
        result = cli(args[0], source, "--method", "synflow", *args[1:])
        assert result.exit_code == 3
        assert "--arch" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (workdir / "weights.scores.safetensors").exists()


def test_prune_cli_reaches_the_exact_count_at_0999(cli, workdir: Path) -> None:
    torch.manual_seed(0)
    tensors = build_arch("lenet5").module.state_dict()
    source = workdir / "lenet.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(source), {META_ARCH: "lenet5"})
    out = workdir / "lenet.pruned.safetensors"
    result = cli("prune", source, "--method", "synflow", "--sparsity", "0.999", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    pruning = report_of(result)["pruning"]
    assert pruning["iterations"] == 100 and pruning["method"] == "synflow"
    pruned = load_file(out)
    names = [n for n in pruned if n.endswith("weight") and pruned[n].dim() > 1]
    total = sum(pruned[n].numel() for n in names)
    assert sum(int((pruned[n] == 0).sum()) for n in names) == round(0.999 * total)
    assert all(int((pruned[n] != 0).sum()) > 0 for n in names)  # no layer collapsed


def test_iterations_zero_exits_2(cli, workdir: Path) -> None:
    torch.manual_seed(0)
    tensors = build_arch("mlp", {"widths": [6, 5, 3]}).module.state_dict()
    source = workdir / "mlp.safetensors"
    meta = {META_ARCH: "mlp", META_ARCH_KWARGS: json.dumps({"widths": [6, 5, 3]})}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(source), meta)
    args = ("prune", source, "--method", "synflow", "--sparsity", "0.5", "--iterations", "0")
    result = cli(*args)
    assert result.exit_code == 2
    assert "--iterations" in result.stderr
    assert not (workdir / "mlp.pruned.safetensors").exists()


# --- the criterion's contract ---------------------------------------------------------------------


def test_registered_with_its_needs_and_defaults() -> None:
    cls = get_criterion("synflow")
    assert cls is SynFlow
    assert cls.needs == ("graph", "input_shape") and cls.default_iterations == 100


def test_the_path_network_is_built_once_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import prunecli.criteria.synflow as synflow

    built = []
    original = synflow.PathNetwork

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(synflow, "PathNetwork", counting)
    model, names = zoo_loaded("lenet5")
    prune_model(model, names, SynFlow(), 0.9, iterations=6)
    assert len(built) == 1


def test_input_shape_from_the_run_wins_and_scoring_leaves_the_model_alone() -> None:
    model, names = as_loaded(ConvNet(batchnorm=True), (3, 9, 9))
    before = {name: t.clone() for name, t in model.tensors.items()}
    ctx = ScoreContext(model, names, inputs=Inputs(input_shape=(3, 12, 12)))
    scores = SynFlow().score(ctx)
    assert all(scores[name].shape == model.tensors[name].shape for name in names)
    for name, tensor in model.tensors.items():
        assert torch.equal(tensor, before[name]), name
