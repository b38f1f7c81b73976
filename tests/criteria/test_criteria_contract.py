"""The contract every registered criterion keeps (DESIGN §3), checked for each one automatically.

A new criterion is covered as soon as it is registered: scores are finite floating tensors of the
weights' shapes, scoring leaves the model alone, pruning reaches the exact count, already-pruned
weights stay pruned, and the same seed gives the same masks.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from prunecli.criteria import list_criteria
from prunecli.data.labelled import from_arrays
from prunecli.io import safetensors as st
from prunecli.models.loaded import META_ARCH, META_ARCH_KWARGS, LoadedModel, load_model
from prunecli.models.zoo import build_arch
from prunecli.pruning.criterion import NEEDS, Criterion, Inputs, ScoreContext
from prunecli.pruning.loop import prune_model
from prunecli.pruning.prunable import select_prunable

SPARSITY = 0.6
ARCHS = {"mlp": {"widths": [20, 30, 10]}, "lenet5": {}}
CRITERIA = list_criteria()


def load_zoo_model(tmp_path: Path, arch: str, init_seed: int = 0) -> tuple[LoadedModel, list[str]]:
    """A zoo model written to safetensors and loaded back the way the CLI does: module + arch."""
    kwargs = ARCHS[arch]
    torch.manual_seed(init_seed)
    tensors = dict(build_arch(arch, kwargs).module.state_dict())
    path = tmp_path / f"{arch}-{init_seed}.safetensors"
    buffer = io.BytesIO()
    st.write(buffer, tensors, {META_ARCH: arch, META_ARCH_KWARGS: json.dumps(kwargs)})
    path.write_bytes(buffer.getvalue())
    model = load_model(str(path))
    assert model.module is not None and model.arch is not None
    return model, select_prunable(model)


def skip_unless_runnable(cls: type[Criterion]) -> None:
    """Training-driven criteria run through `retrain`, not through a single scoring call."""
    unknown = set(cls.needs) - set(NEEDS)
    assert not unknown, f"{cls.name} declares unknown needs {unknown}"
    if "training" in cls.needs:
        pytest.skip(f"{cls.name} trains the model: covered by the training tests")
    if "calibration" in cls.needs:
        pytest.skip(
            f"{cls.name} runs block by block on a transformer: tests/criteria/test_wanda_sparsegpt.py"
        )


def make_inputs(model: LoadedModel) -> Inputs:
    """A small labelled data set of the model's input shape, for the data-driven criteria."""
    shape, classes = model.arch.input_shape, model.arch.num_classes
    x = torch.randn((40, *shape), generator=torch.Generator().manual_seed(0))
    data = from_arrays(x, torch.arange(40) % classes, name="contract")
    return Inputs(shape, data, options={"batch_size": 20})


def make_context(model: LoadedModel, names: list[str], seed: int = 0) -> ScoreContext:
    # scored for a run that prunes to SPARSITY: a mask criterion (npb) sizes its budgets from it
    return ScoreContext(
        model, names, seed=seed, sparsity=SPARSITY, scope="global", inputs=make_inputs(model)
    )


def masks_of(model: LoadedModel, names: list[str]) -> dict[str, torch.Tensor]:
    return {name: model.tensors[name] != 0 for name in names}


def zeros_of(model: LoadedModel, names: list[str]) -> int:
    return sum(int((model.tensors[name] == 0).sum()) for name in names)


def run_prune(cls: type[Criterion], model: LoadedModel, names: list[str], seed: int = 0):
    return prune_model(
        model, names, cls(), SPARSITY, scope=cls.default_scope, seed=seed, inputs=make_inputs(model)
    )


def test_registry_has_the_builtins() -> None:
    names = [cls.name for cls in CRITERIA]
    assert {"magnitude", "random"} <= set(names)
    assert names == sorted(names)
    for cls in CRITERIA:
        assert cls.summary and cls.needs and cls.default_iterations >= 1
        assert cls.default_scope in ("global", "layer", "erk", "row")


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("cls", CRITERIA, ids=lambda cls: cls.name)
def test_scores_are_finite_floating_and_shaped(
    cls: type[Criterion], arch: str, tmp_path: Path
) -> None:
    skip_unless_runnable(cls)
    model, names = load_zoo_model(tmp_path, arch)
    before = {name: tensor.clone() for name, tensor in model.tensors.items()}
    scores = cls().score(make_context(model, names))
    for name in names:
        score = scores[name]
        weight = model.tensors[name]
        assert tuple(score.shape) == tuple(weight.shape), name
        assert score.is_floating_point(), name
        assert bool(torch.isfinite(score).all()), name
    # scoring never changes the model (graph criteria work on copies)
    for name, tensor in model.tensors.items():
        assert torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("cls", CRITERIA, ids=lambda cls: cls.name)
def test_prune_reaches_exact_sparsity(cls: type[Criterion], arch: str, tmp_path: Path) -> None:
    skip_unless_runnable(cls)
    model, names = load_zoo_model(tmp_path, arch)
    others = {n: t.clone() for n, t in model.tensors.items() if n not in names}
    total = sum(model.tensors[name].numel() for name in names)
    result = run_prune(cls, model, names)
    assert zeros_of(model, names) == round(SPARSITY * total)
    assert result.achieved_sparsity == round(SPARSITY * total) / total
    assert result.method == cls.name and result.warnings == []
    for name, tensor in others.items():  # biases and the rest are never pruned
        assert torch.equal(model.tensors[name], tensor), name


@pytest.mark.parametrize("cls", CRITERIA, ids=lambda cls: cls.name)
def test_already_pruned_weights_stay_pruned(cls: type[Criterion], tmp_path: Path) -> None:
    skip_unless_runnable(cls)
    model, names = load_zoo_model(tmp_path, "mlp")
    generator = torch.Generator().manual_seed(3)
    dead = {}
    for name in names:
        dead[name] = torch.rand(model.tensors[name].shape, generator=generator) < 0.3
        model.tensors[name][dead[name]] = 0.0
    total = sum(model.tensors[name].numel() for name in names)
    run_prune(cls, model, names)
    for name in names:
        assert bool((model.tensors[name][dead[name]] == 0).all()), name
    assert zeros_of(model, names) == round(SPARSITY * total)


@pytest.mark.parametrize("cls", CRITERIA, ids=lambda cls: cls.name)
def test_same_seed_same_masks(cls: type[Criterion], tmp_path: Path) -> None:
    skip_unless_runnable(cls)
    runs = []
    for _ in range(2):  # two fresh, identical models
        model, names = load_zoo_model(tmp_path, "mlp")
        run_prune(cls, model, names, seed=7)
        runs.append(masks_of(model, names))
    first, second = runs
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.parametrize("cls", CRITERIA, ids=lambda cls: cls.name)
def test_global_rng_state_does_not_matter(cls: type[Criterion], tmp_path: Path) -> None:
    """--seed fixes every random choice: torch's global generator must not leak in."""
    skip_unless_runnable(cls)
    runs = []
    for global_seed in (1, 2):
        model, names = load_zoo_model(tmp_path, "mlp")
        torch.manual_seed(global_seed)
        run_prune(cls, model, names, seed=7)
        runs.append(masks_of(model, names))
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name
