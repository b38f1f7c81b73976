"""Exact-count masks: global magnitude against torch.nn.utils.prune, ties against a stable sort,
exact zero counts for every scope, schedules, and determinism across processes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from prunecli.criteria import get_criterion
from prunecli.errors import PrunecliError
from prunecli.models.loaded import LoadedModel
from prunecli.pruning.allocation import keep_counts
from prunecli.pruning.criterion import Criterion, ScoreContext
from prunecli.pruning.loop import prune_model
from prunecli.pruning.schedule import round_densities
from prunecli.pruning.select import prune_lowest


def zoo_of_layers(seed: int = 0) -> nn.ModuleDict:
    """A few Linear/Conv layers with random weights and no ties in |w|."""
    torch.manual_seed(seed)
    layers = nn.ModuleDict(
        {
            "conv1": nn.Conv2d(3, 8, 3),
            "conv2": nn.Conv2d(8, 16, 3),
            "fc1": nn.Linear(64, 32),
            "fc2": nn.Linear(32, 10),
        }
    )
    with torch.no_grad():
        for layer in layers.values():
            layer.weight.normal_()
    magnitudes = torch.cat([layer.weight.detach().abs().reshape(-1) for layer in layers.values()])
    assert magnitudes.unique().numel() == magnitudes.numel()  # no ties: the reference is exact
    return layers


def loaded_from(layers: nn.ModuleDict) -> tuple[LoadedModel, list[str]]:
    tensors = {f"{key}.weight": layer.weight.detach().clone() for key, layer in layers.items()}
    return LoadedModel(tensors, {}, "mem", "safetensors", None), list(tensors)


def magnitude_prune(model: LoadedModel, names: list[str], sparsity: float, **kwargs):
    return prune_model(model, names, get_criterion("magnitude")(), sparsity, **kwargs)


def count_zeros(model: LoadedModel, names: list[str]) -> int:
    return sum(int((model.tensors[name] == 0).sum()) for name in names)


# --- 1. global magnitude == torch.nn.utils.prune.global_unstructured ---------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.37, 0.5, 0.8, 0.95, 0.999])
def test_global_magnitude_matches_torch_global_unstructured(sparsity: float) -> None:
    layers = zoo_of_layers()
    model, names = loaded_from(layers)
    total = sum(model.tensors[name].numel() for name in names)
    k = round(sparsity * total)
    prune.global_unstructured(
        [(layer, "weight") for layer in layers.values()],
        pruning_method=prune.L1Unstructured,
        amount=k,
    )
    result = magnitude_prune(model, names, sparsity)
    for key, layer in layers.items():
        expected = layer.weight_mask.bool()
        assert torch.equal(model.tensors[f"{key}.weight"] != 0, expected), key
        # the kept values are the original ones, untouched
        kept = model.tensors[f"{key}.weight"][expected]
        assert torch.equal(kept, layer.weight_orig.detach()[expected])
    assert count_zeros(model, names) == k
    assert result.achieved_sparsity == k / total
    assert result.warnings == []


@pytest.mark.parametrize("iterations", [2, 5])
@pytest.mark.parametrize("schedule", ["exponential", "linear"])
def test_iterative_magnitude_equals_one_shot_reference(iterations: int, schedule: str) -> None:
    """|w| does not change between rounds, so K rounds must end where one-shot torch pruning does."""
    layers = zoo_of_layers(seed=3)
    model, names = loaded_from(layers)
    total = sum(model.tensors[name].numel() for name in names)
    sparsity = 0.9
    prune.global_unstructured(
        [(layer, "weight") for layer in layers.values()],
        pruning_method=prune.L1Unstructured,
        amount=round(sparsity * total),
    )
    ticks: list[tuple[int, int]] = []
    seen: list[int] = []

    def progress(done: int, rounds: int) -> None:
        ticks.append((done, rounds))
        seen.append(count_zeros(model, names))

    result = magnitude_prune(
        model, names, sparsity, iterations=iterations, schedule=schedule, progress=progress
    )
    assert result.iterations == iterations
    assert ticks == [(k, iterations) for k in range(1, iterations + 1)]
    densities = round_densities(1.0 - sparsity, iterations, schedule)
    # every round reaches its own exact count, and the last one the target
    assert seen == [round((1.0 - d) * total) for d in densities[:-1]] + [round(sparsity * total)]
    for key, layer in layers.items():
        assert torch.equal(model.tensors[f"{key}.weight"] != 0, layer.weight_mask.bool()), key


# --- prune_lowest against a stable sort with many ties ------------------------------------------


def stable_sort_reference(
    values: list[np.ndarray], alive: list[np.ndarray], n: int
) -> list[np.ndarray]:
    """Prune the ``n`` lowest live values ordered by (value, tensor index, flat index)."""
    rows = [
        (float(v), t, i)
        for t, (vals, live) in enumerate(zip(values, alive, strict=True))
        for i, (v, ok) in enumerate(zip(vals.reshape(-1), live.reshape(-1), strict=True))
        if ok
    ]
    rows.sort()  # Python compares tuples: value, then tensor order, then flat index
    keep = [live.reshape(-1).copy() for live in alive]
    for _, t, i in rows[: max(0, min(n, len(rows)))]:
        keep[t][i] = False
    return [k.reshape(live.shape) for k, live in zip(keep, alive, strict=True)]


def tied_values(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """fp16-representable values with heavy repetition, negatives, and both signed zeros."""
    rng = np.random.default_rng(seed)
    palette = np.array(
        [-2.5, -1.0, -0.0, 0.0, 0.001, 0.5, 0.5009765625, 1.0, 3.0], dtype=np.float16
    )
    shapes = [(7, 5), (3, 4, 2, 2), (1,), (0, 3), (40,)]
    values = [palette[rng.integers(0, len(palette), size=shape)] for shape in shapes]
    alive = [rng.random(shape) > 0.2 for shape in shapes]
    return values, alive


def _masks_equal(got: dict[str, torch.Tensor], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for (name, mask), ref in zip(got.items(), expected, strict=True):
        assert mask.dtype == torch.bool
        assert np.array_equal(mask.numpy(), ref), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_prune_lowest_ties_follow_tensor_then_flat_order(dtype: torch.dtype, seed: int) -> None:
    values, alive = tied_values(seed)
    scores = {f"t{i}": torch.from_numpy(v).to(dtype) for i, v in enumerate(values)}
    # the reference sees exactly the values the implementation sees (bf16 rounds 0.5009765625)
    ref_values = [scores[f"t{i}"].to(torch.float64).numpy() for i in range(len(values))]
    alive_t = {f"t{i}": torch.from_numpy(a) for i, a in enumerate(alive)}
    live = sum(int(a.sum()) for a in alive)
    for n in [0, 1, 5, live // 3, live // 2, live - 1, live, live + 10, -3]:
        got = prune_lowest(scores, alive_t, n)
        _masks_equal(got, stable_sort_reference(ref_values, alive, n))
        assert sum(int(m.sum()) for m in got.values()) == live - max(0, min(n, live))


def test_prune_lowest_mixed_float32_and_float64_scores() -> None:
    """A float64 score that float32 cannot tell apart from its neighbour still ranks exactly."""
    a = torch.tensor([1.0, 1.0 + 2.0**-40, 1.0 + 2.0**-41], dtype=torch.float64)
    b = torch.tensor([1.0, 0.999], dtype=torch.float32)
    alive = {"a": torch.ones(3, dtype=torch.bool), "b": torch.ones(2, dtype=torch.bool)}
    # order: b[1]=0.999 < a[0]=1.0 = b[0]=1.0 (a first) < a[2] < a[1]
    expected_pruned = [("b", 1), ("a", 0), ("b", 0), ("a", 2), ("a", 1)]
    for n in range(6):
        got = prune_lowest({"a": a, "b": b}, alive, n)
        pruned = {
            (name, i) for name, mask in got.items() for i in range(mask.numel()) if not mask[i]
        }
        assert pruned == set(expected_pruned[:n]), n


def test_fp16_scores_match_their_float_copies() -> None:
    torch.manual_seed(0)
    half = (torch.randn(5000) * 4).round().to(torch.float16)  # ~30 distinct values: many ties
    alive = {"w": torch.rand(5000) > 0.1}
    n = 2000
    for copy in [half, half.float(), half.double(), half.to(torch.bfloat16)]:
        if copy.dtype == torch.bfloat16:  # small integers are exact in bf16 too
            assert torch.equal(copy.double(), half.double())
        ref = stable_sort_reference([copy.double().numpy()], [alive["w"].numpy()], n)
        _masks_equal(prune_lowest({"w": copy}, alive, n), ref)


def test_prune_lowest_large_negative_and_subnormal_scores() -> None:
    """Extremes and signed zeros: -0.0 ties with 0.0 (the later position survives longer)."""
    values = np.array(
        [-3.4e38, -1e-45, 1e-45, 0.0, -0.0, 3.4e38, -1.0, 1.0, 1e-45, -1e-45, 0.0], dtype=np.float32
    )
    alive = np.ones(values.shape, dtype=bool)
    for n in range(len(values) + 1):
        got = prune_lowest({"w": torch.from_numpy(values)}, {"w": torch.from_numpy(alive)}, n)
        _masks_equal(got, stable_sort_reference([values.astype(np.float64)], [alive], n))


def test_prune_lowest_chunking_is_invisible(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny chunks exercise the chunked radix passes; the result is the same stable-sort cut."""
    import prunecli.pruning.select as masks

    monkeypatch.setattr(masks, "_CHUNK", 7)
    values, alive = tied_values(5)
    scores = {f"t{i}": torch.from_numpy(v).float() for i, v in enumerate(values)}
    alive_t = {f"t{i}": torch.from_numpy(a) for i, a in enumerate(alive)}
    ref_values = [v.astype(np.float64) for v in values]
    for n in [1, 17, 40]:
        _masks_equal(prune_lowest(scores, alive_t, n), stable_sort_reference(ref_values, alive, n))


ROUTES = {  # the selection's internal routes, each forced; all must give the stable-sort cut
    "default": {},
    "radix (band too large)": {"_BAND_LIMIT": 0},
    "tiny sample": {"_SAMPLE": 3},
    "band misses": {"_pivots": lambda sample, n, live: (-3.0, -2.9)},
    "always gather live entries": {"_GATHER": 1.0},
    "never gather live entries": {"_GATHER": 0.0},
    "tiny chunks": {"_CHUNK": 7},
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prune_lowest_routes_agree_with_stable_sort(
    route: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prunecli.pruning.select as masks

    for attribute, value in ROUTES[route].items():
        monkeypatch.setattr(masks, attribute, value)
    for seed in range(3):
        values, alive = tied_values(seed)
        rng = np.random.default_rng(seed)
        # continuous values as well as ties, and tensors from all-live to nearly dead
        values.append(rng.standard_normal((30, 20)).astype(np.float16))
        alive.append(rng.random((30, 20)) > [0.0, 0.5, 0.97][seed])
        scores = {f"t{i}": torch.from_numpy(v).to(dtype) for i, v in enumerate(values)}
        ref_values = [scores[f"t{i}"].double().numpy() for i in range(len(values))]
        alive_t = {f"t{i}": torch.from_numpy(a) for i, a in enumerate(alive)}
        live = sum(int(a.sum()) for a in alive)
        for n in [1, 7, live // 10, live // 2, live - 3]:
            got = prune_lowest(scores, alive_t, n)
            _masks_equal(got, stable_sort_reference(ref_values, alive, n))


def test_prune_lowest_large_float64_against_sort() -> None:
    """A million continuous float64 scores over uneven tensors: the exact sort-based cut."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(512, 512), (64, 3, 3, 3), (1000, 700), (10,)]
    scores = {
        f"t{i}": torch.rand(s, generator=generator, dtype=torch.float64) ** 4
        for i, s in enumerate(shapes)
    }
    for density in (1.0, 0.3, 0.01):
        alive = {k: torch.rand(v.shape, generator=generator) < density for k, v in scores.items()}
        live_scores = torch.cat([scores[k][alive[k]] for k in scores])
        n = live_scores.numel() // 7
        threshold = torch.sort(live_scores).values[n - 1]
        got = prune_lowest(scores, alive, n)
        assert sum(int(m.sum()) for m in got.values()) == live_scores.numel() - n
        for k in scores:
            assert not bool((got[k] & ~alive[k]).any())
            assert bool((scores[k][got[k]] >= threshold).all())
            assert bool((scores[k][alive[k] & ~got[k]] <= threshold).all())


# --- 2. exact counts ------------------------------------------------------------------------------

SHAPES_TINY = [[(1, 1)], [(1, 2)], [(1, 1), (1, 2)], [(2, 3), (1, 1), (3, 1)]]
SHAPES_SMALL = [
    [(3, 5)],
    [(4, 6), (8, 12)],
    [(2, 2), (10, 10)],
    [(8, 3, 3, 3), (16, 8, 3, 3), (10, 16)],
]
SPARSITIES = [0.0, 0.01, 0.05, 0.1, 0.25, 0.3, 0.5, 0.6, 0.7, 0.75, 0.9, 0.95, 0.999]


def random_model(shapes: list[tuple[int, ...]], seed: int) -> tuple[LoadedModel, list[str]]:
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        f"l{i}.weight": torch.randn(shape, generator=generator) for i, shape in enumerate(shapes)
    }
    return LoadedModel(tensors, {}, "mem", "safetensors", None), list(tensors)


@pytest.mark.parametrize("scope", ["global", "layer", "erk"])
@pytest.mark.parametrize("shapes", SHAPES_TINY + SHAPES_SMALL, ids=str)
def test_zero_count_is_round_s_times_n(scope: str, shapes: list[tuple[int, ...]]) -> None:
    for i, sparsity in enumerate(SPARSITIES):
        method = ("magnitude", "random")[i % 2]  # both weights-only criteria, half the runs each
        model, names = random_model(shapes, seed=len(shapes))
        total = sum(model.tensors[name].numel() for name in names)
        prune_model(model, names, get_criterion(method)(), sparsity, scope=scope, seed=4)
        assert count_zeros(model, names) == round(sparsity * total), (method, sparsity)


# (sparsity, N, zeros) worked by hand: S·N lands on .5 and Python's round() goes to even
HALF_CASES = [
    (0.5, 3, 2),  # 1.5 -> 2
    (0.5, 5, 2),  # 2.5 -> 2
    (0.5, 7, 4),  # 3.5 -> 4
    (0.05, 10, 0),  # 0.5 -> 0; 1 - (1 - 0.05) = 0.05000000000000004 would give 1
    (0.1, 15, 2),  # 1.5 -> 2; 1 - (1 - 0.1) = 0.09999999999999998 would give 1
    (0.3, 15, 4),  # 4.5 -> 4; 1 - (1 - 0.3) = 0.30000000000000004 would give 5
    (0.25, 2, 0),  # 0.5 -> 0
    (0.75, 2, 2),  # 1.5 -> 2
]


@pytest.mark.parametrize("scope", ["global", "layer", "erk"])
@pytest.mark.parametrize(("sparsity", "n", "zeros"), HALF_CASES)
def test_half_rounding_hand_worked(scope: str, sparsity: float, n: int, zeros: int) -> None:
    for iterations in [1, 3]:
        model, names = random_model([(1, n)], seed=n)
        result = magnitude_prune(model, names, sparsity, scope=scope, iterations=iterations)
        assert count_zeros(model, names) == zeros
        assert result.warnings == []


@pytest.mark.parametrize("scope", ["global", "layer", "erk"])
def test_existing_zeros_stay_zero(scope: str) -> None:
    model, names = random_model([(10, 20), (30, 5)], seed=7)
    generator = torch.Generator().manual_seed(1)
    pre = {name: torch.rand(model.tensors[name].shape, generator=generator) < 0.2 for name in names}
    for name in names:
        model.tensors[name][pre[name]] = 0.0
        # large survivors: magnitude alone would never pick the pre-zeroed entries last
        model.tensors[name][~pre[name]] += 100.0 * torch.sign(model.tensors[name][~pre[name]])
    result = magnitude_prune(model, names, 0.5, scope=scope)
    for name in names:
        assert bool((model.tensors[name][pre[name]] == 0).all()), name
    assert count_zeros(model, names) == 175
    assert result.warnings == []


@pytest.mark.parametrize("scope", ["global", "layer", "erk"])
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_more_existing_zeros_than_target_revives_nothing(scope: str, method: str) -> None:
    model, names = random_model([(10, 20), (30, 5)], seed=8)
    for name in names:
        model.tensors[name].view(-1)[::2] = 0.0  # 50% zeros already
    before = {name: model.tensors[name].clone() for name in names}
    result = prune_model(model, names, get_criterion(method)(), 0.3, scope=scope)
    for name in names:
        assert torch.equal(model.tensors[name], before[name]), name
    assert result.achieved_sparsity == 0.5
    assert len(result.warnings) == 1 and "revives" in result.warnings[0]


def test_layer_already_sparser_than_its_budget_by_hand() -> None:
    # two layers of 10, S = 0.5, scope layer: each keeps 5. Layer a already has 8 zeros, so it
    # keeps its 2 survivors; b loses its 5 smallest. 13 zeros instead of 10: warned, not revived.
    tensors = {
        "a": torch.arange(1.0, 11.0).reshape(2, 5),
        "b": torch.arange(1.0, 11.0).reshape(2, 5),
    }
    tensors["a"].view(-1)[:8] = 0.0
    model = LoadedModel(tensors, {}, "mem", "safetensors", None)
    result = magnitude_prune(model, ["a", "b"], 0.5, scope="layer")
    assert tensors["a"].view(-1).tolist() == [0.0] * 8 + [9.0, 10.0]
    assert tensors["b"].view(-1).tolist() == [0.0] * 5 + [6.0, 7.0, 8.0, 9.0, 10.0]
    assert result.achieved_sparsity == 0.65
    assert len(result.warnings) == 1
    assert "65.0000%" in result.warnings[0] and "--scope layer" in result.warnings[0]


def test_magnitude_on_fp16_weights_with_ties_matches_stable_sort() -> None:
    """Global magnitude on tied fp16 weights: |w| ranks, ties go by (tensor order, flat index)."""
    values, _ = tied_values(9)
    tensors = {f"t{i}.weight": torch.from_numpy(v.copy()) for i, v in enumerate(values)}
    model = LoadedModel(tensors, {}, "mem", "safetensors", None)
    names = list(tensors)
    abs_values = [np.abs(v.astype(np.float64)) for v in values]
    alive = [v != 0 for v in values]
    total = sum(v.size for v in values)
    already = total - sum(int(a.sum()) for a in alive)
    sparsity = 0.6
    expected = stable_sort_reference(abs_values, alive, round(sparsity * total) - already)
    magnitude_prune(model, names, sparsity)
    for name, ref in zip(names, expected, strict=True):
        assert np.array_equal((tensors[name] != 0).numpy(), ref), name


class ReversedConstantScores(Criterion):
    """All scores equal, returned in reverse order with an extra, non-prunable entry."""

    name = "reversed-constant"
    summary = "test only"

    def score(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        scores = {name: torch.ones(ctx.tensor(name).shape) for name in reversed(ctx.names)}
        scores["bias"] = torch.ones(3)
        return scores


def test_ties_follow_file_order_whatever_order_a_criterion_returns() -> None:
    tensors = {"a": torch.ones(2, 3), "b": torch.ones(4), "bias": torch.ones(3)}
    model = LoadedModel(tensors, {}, "mem", "safetensors", None)
    # 10 weights, S = 0.7 -> 7 zeros: all 6 of a (first in file order), then b[0]
    prune_model(model, ["a", "b"], ReversedConstantScores(), 0.7)
    assert tensors["a"].eq(0).all()
    assert tensors["b"].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert tensors["bias"].tolist() == [1.0, 1.0, 1.0]


def test_empty_tensors_are_allowed() -> None:
    model, names = random_model([(0, 4), (3, 3)], seed=1)
    for scope in ["global", "layer", "erk"]:
        prune_model(model, names, get_criterion("magnitude")(), 0.5, scope=scope)
        assert count_zeros(model, names) == round(0.5 * 9)
    only_empty, empty_names = random_model([(0, 4)], seed=1)
    result = prune_model(only_empty, empty_names, get_criterion("magnitude")(), 0.5)
    assert result.achieved_sparsity == 0.0


# --- 4. schedules -----------------------------------------------------------------------------------


def test_exponential_schedule_hand_values() -> None:
    # 0.125^(1/3) = 0.5, 0.125^(2/3) = 0.25
    assert round_densities(0.125, 3) == pytest.approx([0.5, 0.25, 0.125], abs=1e-15)
    assert round_densities(0.01, 2, "exponential") == pytest.approx([0.1, 0.01], abs=1e-15)
    assert round_densities(0.3, 1) == [0.3]


def test_linear_schedule_hand_values() -> None:
    # 1 - 0.6·k/3 for k = 1, 2; then 0.4
    assert round_densities(0.4, 3, "linear") == pytest.approx([0.8, 0.6, 0.4], abs=1e-15)
    assert round_densities(0.1, 4, "linear") == pytest.approx([0.775, 0.55, 0.325, 0.1], abs=1e-15)


@pytest.mark.parametrize("kind", ["exponential", "linear"])
@pytest.mark.parametrize("density", [0.9, 0.3, 0.1, 0.01, 1e-6, 0.7 + 1e-12])
@pytest.mark.parametrize("k", [1, 2, 7, 100])
def test_schedule_ends_exactly_at_density(kind: str, density: float, k: int) -> None:
    steps = round_densities(density, k, kind)
    assert len(steps) == k
    assert steps[-1] == density  # exactly, not approximately
    assert all(a > b for a, b in zip([1.0, *steps], steps, strict=False))  # strictly decreasing
    exponent = [density ** (i / k) for i in range(1, k + 1)]
    linear = [1 - (1 - density) * i / k for i in range(1, k + 1)]
    assert steps == pytest.approx(exponent if kind == "exponential" else linear, rel=1e-12)


@pytest.mark.parametrize("bad", [{"iterations": 0}, {"iterations": 3, "kind": "cosine"}])
def test_schedule_rejects_bad_arguments(bad: dict) -> None:
    from prunecli.errors import BadInput

    with pytest.raises(BadInput):
        round_densities(0.5, bad["iterations"], bad.get("kind", "exponential"))


@pytest.mark.parametrize("scope", ["global", "layer", "erk"])
@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_iterative_reaches_exact_target(scope: str, iterations: int) -> None:
    for sparsity in [0.5, 0.9, 0.99]:
        model, names = random_model([(8, 3, 3, 3), (16, 8, 3, 3), (10, 16)], seed=2)
        total = sum(model.tensors[name].numel() for name in names)
        magnitude_prune(model, names, sparsity, scope=scope, iterations=iterations)
        assert count_zeros(model, names) == round(sparsity * total)


# --- 5. determinism ------------------------------------------------------------------------------

_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    from prunecli.models.loaded import LoadedModel
    from prunecli.pruning.loop import prune_model
    from prunecli.criteria import get_criterion
    from prunecli.pruning.criterion import Criterion, ScoreContext

    out = {}
    for seed in (0, 1):
        for scope in ("global", "erk"):
            tensors = {
                "a.weight": torch.arange(600, dtype=torch.float32).reshape(20, 30) + 1,
                "b.weight": torch.arange(300, dtype=torch.float32).reshape(10, 30) + 1,
            }
            model = LoadedModel(tensors, {}, "mem", "safetensors", None)
            prune_model(model, list(tensors), get_criterion("random")(), 0.7, scope=scope,
                        seed=seed, iterations=2)
            digest = hashlib.sha256()
            for name in tensors:
                digest.update((tensors[name] != 0).numpy().tobytes())
            out[f"{seed}/{scope}"] = digest.hexdigest()
    json.dump(out, sys.stdout)
    """
)


def test_random_masks_identical_across_processes() -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    first, second = outputs
    assert first == second
    assert first["0/global"] != first["1/global"]
    assert first["0/erk"] != first["1/erk"]
    assert first["0/global"] != first["0/erk"]


def test_random_same_seed_same_masks_in_process() -> None:
    def masks(seed: int) -> bytes:
        model, names = random_model([(20, 30), (10, 30)], seed=0)
        prune_model(model, names, get_criterion("random")(), 0.8, seed=seed)
        return b"".join((model.tensors[n] != 0).numpy().tobytes() for n in names)

    assert masks(5) == masks(5)
    assert masks(5) != masks(6)
    assert hashlib.sha256(masks(5)).digest() != hashlib.sha256(masks(0)).digest()


def test_random_erk_keeps_erk_counts_per_layer() -> None:
    shapes = [(8, 3, 3, 3), (16, 8, 3, 3), (32, 16, 3, 3), (10, 32)]
    for sparsity in [0.5, 0.9, 0.98]:
        model, names = random_model(shapes, seed=3)
        prune_model(model, names, get_criterion("random")(), sparsity, scope="erk", seed=9)
        counts = keep_counts("erk", dict(zip(names, shapes, strict=True)), sparsity)
        assert counts is not None
        for name in names:
            assert int((model.tensors[name] != 0).sum()) == counts[name], (sparsity, name)


# --- iterative runs: tracking live positions between rounds changes no mask ----------------------


class TiedRoundScores(Criterion):
    """Scores drawn afresh each round from a small palette (many ties), NaN at pruned weights."""

    name = "tied-rounds"
    summary = "test"

    def score(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        palette = torch.tensor([0.25, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
        generator = torch.Generator().manual_seed(ctx.round)
        scores = {}
        for name in ctx.names:
            tensor = ctx.tensor(name)
            picks = torch.randint(len(palette), tensor.shape, generator=generator)
            # pruned weights are never compared: a NaN there must not matter
            scores[name] = palette[picks].masked_fill(tensor == 0, float("nan"))
        return scores


def reference_rounds(
    tensors: dict[str, torch.Tensor], sparsity: float, rounds: int, scope: str
) -> list[np.ndarray]:
    """The loop written plainly: full tensors, a stable sort each round, no state kept."""
    names = list(tensors)
    criterion = TiedRoundScores()
    model = LoadedModel({k: v.clone() for k, v in tensors.items()}, {}, "mem", "safetensors", None)
    densities = round_densities(1.0 - sparsity, rounds, "exponential")
    targets = [1.0 - d for d in densities[:-1]] + [sparsity]
    shapes = {name: tuple(tensors[name].shape) for name in names}
    for index, target in enumerate(targets):
        scores = criterion.score(ScoreContext(model, names, round=index))
        values = [scores[name].numpy() for name in names]
        alive = [(model.tensors[name] != 0).numpy() for name in names]
        counts = keep_counts(scope, shapes, target)
        if counts is None:
            total = sum(a.size for a in alive)
            n = round(target * total) - sum(int((~a).sum()) for a in alive)
            keeps = stable_sort_reference(values, alive, n)
        else:
            keeps = [
                stable_sort_reference([v], [a], a.size - counts[name] - int((~a).sum()))[0]
                for name, v, a in zip(names, values, alive, strict=True)
            ]
        for name, keep in zip(names, keeps, strict=True):
            model.tensors[name][torch.from_numpy(~keep)] = 0
    return [(model.tensors[name] != 0).numpy() for name in names]


@pytest.mark.parametrize("scope", ["global", "layer", "erk"])
def test_iterative_rounds_match_a_stateless_reference(scope: str) -> None:
    model, names = loaded_from(zoo_of_layers(3))
    with torch.no_grad():  # some weights start pruned, one layer mostly
        model.tensors["conv1.weight"][:, :2] = 0
        model.tensors["fc1.weight"].view(-1)[: 64 * 31] = 0
    expected = reference_rounds(model.tensors, 0.97, 12, scope)
    prune_model(model, names, TiedRoundScores(), 0.97, scope=scope, iterations=12)
    _masks_equal({name: model.tensors[name] != 0 for name in names}, expected)


def test_a_nan_score_at_a_live_weight_is_refused() -> None:
    class NanAtLive(TiedRoundScores):
        def score(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
            scores = super().score(ctx)
            if ctx.round == 5:  # by now fc1 is tracked by its few live positions
                live = ctx.live_positions("fc1.weight")
                assert live is not None
                scores["fc1.weight"].view(-1)[live[0]] = float("nan")
            return scores

    model, names = loaded_from(zoo_of_layers(3))
    with torch.no_grad():
        model.tensors["fc1.weight"].view(-1)[: 64 * 31] = 0
    with pytest.raises(PrunecliError, match="fc1.weight.*not finite at a live weight"):
        prune_model(model, names, NanAtLive(), 0.97, iterations=12)
