"""SNIP and GraSP (DESIGN §3) against independent routes, their contract, and the CLI.

SNIP is compared with |θ ⊙ ∂L/∂θ| computed with autograd on a separate copy here; GraSP's Hg
with a finite-difference Hessian-vector product (float64), built from first gradients only.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import Result
from conftest import SMALL_MLP, report_of, write_weights, write_zoo
from safetensors.torch import load_file
from torch import nn

from prunecli.criteria import get_criterion
from prunecli.data.labelled import Dataset, from_arrays
from prunecli.errors import BadInput
from prunecli.models.loaded import LoadedModel, load_model
from prunecli.pruning.criterion import Inputs, ScoreContext
from prunecli.pruning.loop import prune_model
from prunecli.pruning.prunable import select_prunable

Snip, Grasp = get_criterion("snip"), get_criterion("grasp")


def wrap(module: nn.Module) -> tuple[LoadedModel, list[str]]:
    """A LoadedModel around ``module``, its tensors shared with the module as the loader does."""
    tensors = {name: p.detach() for name, p in module.named_parameters()}
    tensors.update(dict(module.named_buffers()))
    model = LoadedModel(tensors, {}, "test", "safetensors", None, module=module.eval())
    return model, select_prunable(model)


def toy_data(n: int, shape: tuple[int, ...], classes: int, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=generator)
    return from_arrays(x, torch.arange(n) % classes, name="toy")


def context(model: LoadedModel, names: list[str], data: Dataset, **options) -> ScoreContext:
    return ScoreContext(model, names, seed=0, inputs=Inputs(data=data, options=options))


def tiny_net(with_batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(5)
    layers = [nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)]
    if with_batchnorm:
        layers.insert(1, nn.BatchNorm1d(7))
    return nn.Sequential(*layers).double()


# --- independent routes --------------------------------------------------------------------


def gradients(
    module: nn.Module,
    names: list[str],
    data: Dataset,
    temperature: float = 1.0,
    shift: dict[str, torch.Tensor] | None = None,
    train: bool = False,
) -> dict[str, torch.Tensor]:
    """∂L/∂θ of the mean cross-entropy over the whole data set, on a separate copy whose
    prunable weights are moved by ``shift``."""
    twin = copy.deepcopy(module).train(train)
    params = dict(twin.named_parameters())
    dtype = next(iter(params.values())).dtype
    if shift:
        with torch.no_grad():
            for name in names:
                params[name] += shift[name]
    loss = F.cross_entropy(twin(data.x.to(dtype)) / temperature, data.y)
    grads = torch.autograd.grad(loss, [params[name] for name in names])
    return dict(zip(names, grads, strict=True))


def direct_snip(module: nn.Module, names: list[str], data: Dataset) -> dict[str, torch.Tensor]:
    weights = dict(module.named_parameters())
    grads = gradients(module, names, data)
    return {name: (weights[name].detach() * grads[name]).abs() for name in names}


def finite_difference_grasp(
    module: nn.Module,
    names: list[str],
    data: Dataset,
    temperature: float,
    scale: float = 1.0,
    train: bool = False,
) -> dict[str, torch.Tensor]:
    """θ ⊙ Hg with Hg = (∇L(θ + εg) − ∇L(θ − εg)) / 2ε and g = ∇L(θ), masked to live weights.

    ``scale`` multiplies g and H alike (a sum over k equal partitions of the data gives k·∇L)."""
    weights = {name: p.detach() for name, p in module.named_parameters()}
    g = gradients(module, names, data, temperature, train=train)
    g = {name: g[name] * (weights[name] != 0) for name in names}
    norm = math.sqrt(sum(float((v**2).sum()) for v in g.values()))
    eps = 1e-4 / norm
    plus = gradients(module, names, data, temperature, {n: eps * g[n] for n in names}, train)
    minus = gradients(module, names, data, temperature, {n: -eps * g[n] for n in names}, train)
    return {
        name: weights[name] * (plus[name] - minus[name]) / (2 * eps) * scale**2 for name in names
    }


def assert_scores_close(actual, expected, rtol: float) -> None:
    top = max(float(v.abs().max()) for v in expected.values())
    assert top > 0
    for name, value in expected.items():
        torch.testing.assert_close(
            actual[name].to(value.dtype), value, rtol=rtol, atol=rtol * top, msg=name
        )


# --- SNIP ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "shape"), [("mlp", (20,)), ("lenet5", (1, 28, 28))])
def test_snip_equals_autograd_on_a_copy(arch: str, shape: tuple[int, ...], tmp_path: Path) -> None:
    kwargs = {"widths": [20, 30, 10]} if arch == "mlp" else {}
    model = load_model(str(write_zoo(tmp_path / "m.safetensors", arch, kwargs)))
    names = select_prunable(model)
    data = toy_data(40, shape, 10)
    before = {name: t.clone() for name, t in model.tensors.items()}
    scores = Snip().score(context(model, names, data, batch_size=40))
    assert_scores_close(scores, direct_snip(model.module, names, data), rtol=1e-5)
    for name, tensor in model.tensors.items():
        assert torch.equal(tensor, before[name]), name  # the loaded model is untouched
    assert all(p.grad is None for p in model.module.parameters())


def test_snip_sums_the_gradient_over_batches() -> None:
    model, names = wrap(tiny_net())
    data = toy_data(30, (5,), 3)
    # two batches of 15 cover the data once: ∂(L1 + L2)/∂θ = 2 ∂L/∂θ of the whole set
    scores = Snip().score(context(model, names, data, batches=2, batch_size=15))
    expected = {n: 2 * s for n, s in direct_snip(model.module, names, data).items()}
    assert_scores_close(scores, expected, rtol=1e-10)


def test_snip_scores_the_masked_model() -> None:
    model, names = wrap(tiny_net())
    generator = torch.Generator().manual_seed(1)
    for name in names:
        model.tensors[name][torch.rand(model.tensors[name].shape, generator=generator) < 0.4] = 0
    data = toy_data(30, (5,), 3)
    scores = Snip().score(context(model, names, data, batch_size=30))
    assert_scores_close(scores, direct_snip(model.module, names, data), rtol=1e-10)
    for name in names:
        assert bool((scores[name][model.tensors[name] == 0] == 0).all())


def test_snip_runs_batchnorm_in_eval_mode() -> None:
    module = tiny_net(with_batchnorm=True)
    with torch.no_grad():  # running statistics that differ from any batch's
        module[1].running_mean.fill_(0.3)
        module[1].running_var.fill_(2.0)
    model, names = wrap(module)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    data = toy_data(30, (5,), 3)
    scores = Snip().score(context(model, names, data, batch_size=30))
    assert_scores_close(scores, direct_snip(module, names, data), rtol=1e-10)
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_iterative_snip_equals_rescoring_by_hand() -> None:
    """--iterations K: each round rescores the masked model and prunes to d^(k/K)."""
    data = toy_data(40, (5,), 3)
    model, names = wrap(tiny_net())
    by_hand = copy.deepcopy(model.module)
    weights = dict(by_hand.named_parameters())
    total = sum(weights[n].numel() for n in names)
    sparsity, rounds = 0.8, 3
    for k in range(1, rounds + 1):
        target = sparsity if k == rounds else 1 - (1 - sparsity) ** (k / rounds)
        scores = direct_snip(by_hand, names, data)
        live = torch.cat([(weights[n] != 0).flatten() for n in names])
        flat = torch.cat([scores[n].flatten() for n in names])
        flat[~live] = -1.0  # already pruned: they count towards the target
        order = torch.argsort(flat, stable=True)
        keep = torch.ones(total, dtype=torch.bool)
        keep[order[: round(target * total)]] = False
        with torch.no_grad():
            start = 0
            for n in names:
                size = weights[n].numel()
                weights[n].mul_(keep[start : start + size].view_as(weights[n]))
                start += size
    prune_model(
        model,
        names,
        Snip(),
        sparsity,
        iterations=rounds,
        inputs=Inputs(data=data, options={"batch_size": 40}),
    )
    for n in names:
        assert torch.equal(model.tensors[n] != 0, weights[n] != 0), n


def test_snip_seed_picks_the_batches() -> None:
    model, names = wrap(tiny_net())
    data = toy_data(60, (5,), 3)
    ctx = context(model, names, data, batch_size=10)
    first = Snip().score(ctx)
    assert all(torch.equal(first[n], Snip().score(ctx)[n]) for n in names)
    ctx.seed = 1
    assert not all(torch.equal(first[n], Snip().score(ctx)[n]) for n in names)


def test_each_round_scores_the_next_batches_of_the_stream() -> None:
    """Iterative SNIP sees new data every round, like the reference's fresh batch per step."""
    model, names = wrap(tiny_net())
    data = toy_data(60, (5,), 3)
    ctx = context(model, names, data, batch_size=10, batches=2)
    ctx.round = 1
    scores = Snip().score(ctx)
    third, fourth = list(data.batches(10, 2, seed=0, start=2))
    subset = from_arrays(torch.cat([third[0], fourth[0]]), torch.cat([third[1], fourth[1]]))
    expected = {n: 2 * s for n, s in direct_snip(model.module, names, subset).items()}
    assert_scores_close(scores, expected, rtol=1e-10)


# --- GraSP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [200.0, 1.0])
def test_grasp_hg_matches_finite_differences(temperature: float) -> None:
    model, names = wrap(tiny_net())
    data = toy_data(30, (5,), 3)
    options = {"batch_size": 30} | ({} if temperature == 200 else {"temperature": temperature})
    scores = Grasp().score(context(model, names, data, **options))
    expected = finite_difference_grasp(model.module, names, data, temperature)
    assert_scores_close(scores, expected, rtol=1e-6)
    assert any(bool((s < 0).any()) for s in scores.values())  # signed scores


def test_grasp_sums_over_balanced_batches() -> None:
    """Two balanced batches of 15 (5 per class) cover the data once: g and H both double."""
    model, names = wrap(tiny_net())
    data = toy_data(30, (5,), 3)
    scores = Grasp().score(context(model, names, data, batches=2, batch_size=15))
    expected = finite_difference_grasp(model.module, names, data, 200.0, scale=2.0)
    assert_scores_close(scores, expected, rtol=1e-6)


def test_grasp_on_a_masked_model_holds_pruned_weights_at_zero() -> None:
    model, names = wrap(tiny_net())
    generator = torch.Generator().manual_seed(2)
    for name in names:
        model.tensors[name][torch.rand(model.tensors[name].shape, generator=generator) < 0.4] = 0
    data = toy_data(30, (5,), 3)
    scores = Grasp().score(context(model, names, data, batch_size=30))
    expected = finite_difference_grasp(model.module, names, data, 200.0)
    assert_scores_close(scores, expected, rtol=1e-6)


def test_grasp_uses_batch_statistics_for_batchnorm() -> None:
    module = tiny_net(with_batchnorm=True)
    with torch.no_grad():
        module[1].running_mean.fill_(0.3)
        module[1].running_var.fill_(2.0)
    model, names = wrap(module)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    data = toy_data(30, (5,), 3)
    scores = Grasp().score(context(model, names, data, batch_size=30))
    expected = finite_difference_grasp(module, names, data, 200.0, train=True)
    assert_scores_close(scores, expected, rtol=1e-6)
    assert not module.training
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_grasp_draws_class_balanced_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    original = Dataset.batches

    def spy(self, *args, **kwargs):
        for x, y in original(self, *args, **kwargs):
            seen.append(y.bincount(minlength=3).tolist())
            yield x, y

    monkeypatch.setattr(Dataset, "batches", spy)
    model, names = wrap(tiny_net())
    labels = torch.tensor([0] * 30 + [1] * 5 + [2] * 5)  # imbalanced data
    data = from_arrays(torch.randn(40, 5), labels)
    Grasp().score(context(model, names, data, batch_size=9))
    assert seen == [[3, 3, 3]]


def test_grasp_temperature_must_be_positive() -> None:
    model, names = wrap(tiny_net())
    for bad in (0, -1.0, float("inf"), "hot"):
        with pytest.raises(BadInput, match="--temperature"):
            Grasp().score(context(model, names, toy_data(9, (5,), 3), temperature=bad))


# --- the criterion contract, with data -----------------------------------------------------


@pytest.mark.parametrize("cls", [Snip, Grasp], ids=["snip", "grasp"])
@pytest.mark.parametrize(("arch", "shape"), [("mlp", (20,)), ("lenet5", (1, 28, 28))])
def test_exact_count_and_pruned_stay_pruned(cls, arch, shape, tmp_path: Path) -> None:
    kwargs = {"widths": [20, 30, 10]} if arch == "mlp" else {}
    model = load_model(str(write_zoo(tmp_path / "m.safetensors", arch, kwargs)))
    names = select_prunable(model)
    dead = {n: torch.rand(model.tensors[n].shape) < 0.2 for n in names}
    for n in names:
        model.tensors[n][dead[n]] = 0
    others = {n: t.clone() for n, t in model.tensors.items() if n not in names}
    total = sum(model.tensors[n].numel() for n in names)
    inputs = Inputs(data=toy_data(40, shape, 10), options={"batch_size": 20})
    result = prune_model(model, names, cls(), 0.7, inputs=inputs)
    assert sum(int((model.tensors[n] == 0).sum()) for n in names) == round(0.7 * total)
    assert result.warnings == []
    for n in names:
        assert bool((model.tensors[n][dead[n]] == 0).all()), n
    for n, tensor in others.items():
        assert torch.equal(model.tensors[n], tensor), n


@pytest.mark.parametrize("cls", [Snip, Grasp], ids=["snip", "grasp"])
def test_same_seed_same_masks_whatever_the_global_state(cls, tmp_path: Path) -> None:
    path = write_zoo(tmp_path / "m.safetensors", "mlp", {"widths": [20, 30, 10]})
    data = toy_data(100, (20,), 10)
    masks = []
    for global_seed in (1, 2):
        model = load_model(str(path))
        names = select_prunable(model)
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        inputs = Inputs(data=data, options={"batch_size": 16, "batches": 2})
        prune_model(model, names, cls(), 0.6, iterations=2, seed=7, inputs=inputs)
        masks.append({n: model.tensors[n] != 0 for n in names})
    for n in masks[0]:
        assert torch.equal(masks[0][n], masks[1][n]), n


# --- the command line ----------------------------------------------------------------------

MNIST1D_MLP = '{"widths":[40,100,100,10]}'


def assert_refused(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.startswith("prunecli: error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2 and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def zeros_in(path: Path) -> int:
    tensors = load_file(str(path))
    return sum(int((tensors[n] == 0).sum()) for n in ("fc1.weight", "fc2.weight", "fc3.weight"))


@pytest.fixture
def mnist1d_mlp(cli, workdir: Path) -> Path:
    result = cli("init", "mlp", "--arch-kwargs", MNIST1D_MLP, "-o", "mlp.safetensors", "-q")
    assert result.exit_code == 0, result.stderr
    return workdir / "mlp.safetensors"


def test_cli_snip_on_mnist1d(cli, mnist1d_mlp: Path) -> None:
    result = cli(
        "prune", mnist1d_mlp, "--method", "snip", "--sparsity", "0.9", "--data", "mnist1d", "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["pruning"]["method"] == "snip" and report["pruning"]["achieved_sparsity"] == 0.9
    assert zeros_in(mnist1d_mlp.parent / "mlp.pruned.safetensors") == 13_500  # of 15,000


def test_cli_grasp_on_an_npz_file_and_iterative_snip(cli, mnist1d_mlp: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez("train.npz", x=rng.normal(size=(200, 40)), y=np.arange(200) % 10)
    result = cli(
        "prune",
        mnist1d_mlp,
        "--method",
        "grasp",
        "--sparsity",
        "0.9",
        "--data",
        "train.npz",
        "-o",
        "grasp.safetensors",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert zeros_in(Path("grasp.safetensors")) == 13_500
    result = cli(
        "prune",
        mnist1d_mlp,
        "--method",
        "snip",
        "--sparsity",
        "0.95",
        "--iterations",
        "4",
        "--batches",
        "2",
        "--batch-size",
        "64",
        "--data",
        "train.npz",
        "-o",
        "isnip.safetensors",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert report_of(result)["pruning"]["iterations"] == 4
    assert zeros_in(Path("isnip.safetensors")) == 14_250


def test_cli_score_snip_equals_autograd(cli, mnist1d_mlp: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez("train.npz", x=rng.normal(size=(50, 40)), y=np.arange(50) % 10)
    result = cli(
        "score",
        mnist1d_mlp,
        "--method",
        "snip",
        "--data",
        "train.npz",
        "--batch-size",
        "50",
        "-o",
        "s.safetensors",
    )
    assert result.exit_code == 0, result.stderr
    model = load_model(str(mnist1d_mlp))
    names = select_prunable(model)
    expected = direct_snip(model.module, names, from_arrays(*np.load("train.npz").values()))
    assert_scores_close(load_file("s.safetensors"), expected, rtol=1e-5)


def test_cli_data_method_without_data_is_refused_before_loading(cli, workdir: Path) -> None:
    for method in ("snip", "grasp"):
        # the model does not even exist: --data is what the message is about
        result = cli("prune", "absent.safetensors", "--method", method, "--sparsity", "0.5")
        assert_refused(result, 2, "--data", method)
        assert_refused(cli("score", "absent.safetensors", "--method", method), 2, "--data")


def test_cli_labels_out_of_range(cli, mlp_file: Path) -> None:
    np.savez("ten.npz", x=np.zeros((20, 12)), y=np.arange(20) % 10)
    result = cli("prune", mlp_file, "--method", "snip", "--sparsity", "0.5", "--data", "ten.npz")
    assert_refused(result, 2, "10 classes", "4 outputs")
    assert not Path("model.pruned.safetensors").exists()


def test_cli_data_shape_does_not_fit(cli, mlp_file: Path) -> None:
    assert SMALL_MLP["widths"][0] == 12
    result = cli("prune", mlp_file, "--method", "grasp", "--sparsity", "0.5", "--data", "mnist1d")
    assert_refused(result, 2, "[40]", "[12]")


def test_cli_weights_only_file_exits_3(cli, workdir: Path) -> None:
    torch.manual_seed(0)
    write_weights(workdir / "w.safetensors", {"fc.weight": torch.randn(4, 12)})
    result = cli(
        "prune", "w.safetensors", "--method", "snip", "--sparsity", "0.5", "--data", "digits"
    )
    assert_refused(result, 3, "--arch")


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--data", "missing.npz"], ["missing.npz does not exist"]),
        (["--data", "mnist1d", "--batches", "0"], ["--batches"]),
        (["--data", "mnist1d", "--batch-size", "0"], ["--batch-size"]),
        (["--data", "mnist1d", "--temperature", "0", "--method", "grasp"], ["--temperature"]),
        (["--data", "nothing-like-this"], ["not a file, a folder"]),
    ],
)
def test_cli_bad_data_options(
    cli, mnist1d_mlp: Path, extra: list[str], fragments: list[str]
) -> None:
    args = ["prune", mnist1d_mlp, "--method", "snip", "--sparsity", "0.5", *extra]
    assert_refused(cli(*args), 2, *fragments)
    assert not (mnist1d_mlp.parent / "mlp.pruned.safetensors").exists()


def export_program(path: Path, dynamic_batch: bool) -> Path:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    dynamic = ({0: torch.export.Dim("batch", min=2)},) if dynamic_batch else None
    program = torch.export.export(module, (torch.randn(3, 12),), dynamic_shapes=dynamic)
    torch.export.save(program, str(path))
    return path


def test_cli_snip_and_grasp_on_pt2_programs(cli, workdir: Path) -> None:
    np.savez("four.npz", x=np.random.default_rng(0).normal(size=(30, 12)), y=np.arange(30) % 4)
    export_program(workdir / "dyn.pt2", dynamic_batch=True)
    for method in ("snip", "grasp"):
        args = ("prune", "dyn.pt2", "--method", method, "--sparsity", "0.75", "--data", "four.npz")
        result = cli(*args, "-o", f"{method}.pt2", "--json")
        assert result.exit_code == 0, result.stderr
        assert report_of(result)["totals"]["prunable_nonzero"] == 64  # of 256
    export_program(workdir / "static.pt2", dynamic_batch=False)
    args = ("prune", "static.pt2", "--method", "snip", "--sparsity", "0.5", "--data", "four.npz")
    assert_refused(cli(*args), 2, "batch of 30", "--batch-size")
    result = cli(*args, "--batch-size", "3", "-o", "fixed.pt2", "--json")
    assert result.exit_code == 0, result.stderr
