"""npb: node-path balancing ("Understanding Pruning at Initialization: An Effective Node-Path
Balancing Perspective", ICLR 2023 submission; NeurIPS 2023 as "Towards Data-Agnostic Pruning at
Initialization"; reference code pvh1602/NPB).

NPB chooses a mask, not a ranking. Layer by layer in execution order, with P_in[i] the number of
paths that reach input channel i through the layers already decided, an integer program picks
M_ij, the number of kept kernel entries between input channel i and output channel j:

    maximise  α·A + (1−α)·B + β·R   subject to  Σ M_ij = budget,  0 ≤ M_ij ≤ cap_ij

A = fraction of the block's input and output nodes that keep a connection, B = Σ P_in[i]·M_ij over
the reference's norm (``path_norm``: the best achievable value, or below one full input row the
paths of the layer with every kernel at max_p), R = distinct kept (i, j) pairs over the budget.
Only connections that can carry paths (P_in[i] > 0) make a node active or count as a pair. cap_ij =
min(max_p, live entries of the kernel). M_ij entries are then switched on at random inside each
kernel, and a final pass moves the budget of kept weights that lie on no input→output path to the
entries that add the most paths. The integer program is topology/node_path_milp.py, the final
pass topology/path_repair.py; this module sizes the blocks and wires them together.

The scores are 1 for the kept entries and 0 for the rest, with every layer keeping exactly the
count the selection enforces (ERK under ``--scope erk`` or ``global``, uniform under ``layer``),
so prune's exact-count selection keeps precisely this mask.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prunecli.criteria.registry import register
from prunecli.errors import BadInput, Unsupported
from prunecli.pruning.allocation import keep_counts, round_to_total
from prunecli.pruning.criterion import Criterion, ScoreContext
from prunecli.pruning.seeding import stream_seed
from prunecli.topology.node_path_milp import solve_block
from prunecli.topology.path_repair import refill_ineffective
from prunecli.topology.pathnet import PathNetwork, call_order, layer_inputs

#: layers with more (input, output) channel pairs than this are solved in chunks of output
#: channels: the reference's ResNet-20 rule (32 outputs above 64×32 pairs); smaller chunks also
#: solve faster in HiGHS
MAX_BLOCK_PAIRS = 2048
_STREAM = 0x4E5042  # "NPB": kernel-entry placement draws its own random stream
_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


@dataclass(frozen=True)
class NpbOptions:
    alpha: float = 0.01
    beta: float = 1.0
    max_p: int | None = None  # None: the kernel area

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> NpbOptions:
        alpha = float(options.get("alpha", cls.alpha))
        beta = float(options.get("beta", cls.beta))
        max_p = options.get("max_p")
        if not 0.0 <= alpha <= 1.0:
            raise BadInput(f"--alpha {alpha} is outside [0, 1]", "it weighs nodes against paths")
        if not (beta >= 0.0 and math.isfinite(beta)):
            raise BadInput(f"--beta {beta} must be a finite number ≥ 0")
        if max_p is not None and int(max_p) < 1:
            raise BadInput(f"--max-p {max_p} must be at least 1")
        return cls(alpha, beta, None if max_p is None else int(max_p))


def _max_p(requested: int | None, area: int, live: np.ndarray, budget: int) -> int:
    """max_p (default: the kernel area), raised just enough that the budget fits."""
    max_p = min(requested or area, area)
    while max_p < area and int(np.minimum(live, max_p).sum()) < budget:
        max_p += 1
    return max_p


def _blocks(n_out: int, n_in: int, groups: int) -> list[tuple[int, int, int]]:
    """(first output, end output, group) of each subproblem: groups, then output chunks."""
    per_group = n_out // groups
    chunk = per_group if per_group * n_in <= MAX_BLOCK_PAIRS else max(1, MAX_BLOCK_PAIRS // n_in)
    return [
        (start, min(start + chunk, (g + 1) * per_group), g)
        for g in range(groups)
        for start in range(g * per_group, (g + 1) * per_group, chunk)
    ]


def layer_counts(
    alive: torch.Tensor, paths: np.ndarray, budget: int, groups: int, options: NpbOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Kept entries per kernel (outputs × inputs) for one layer, and the per-kernel caps."""
    n_out, n_in = alive.shape[:2]
    area = math.prod(alive.shape[2:])
    live = alive.reshape(n_out, n_in, area).sum(-1).numpy().astype(np.int64)
    if budget >= int(live.sum()):  # keeps everything still alive: nothing to choose
        return live, live
    caps = np.minimum(live, _max_p(options.max_p, area, live, budget))
    blocks = _blocks(n_out, n_in, groups)
    room = {str(k): int(caps[start:end].sum()) for k, (start, end, _) in enumerate(blocks)}
    total = sum(room.values())
    shares = round_to_total(
        {k: budget * r / total if total else 0.0 for k, r in room.items()},
        room,
        min(budget, total),
    )
    counts = np.zeros_like(caps)
    for k, (start, end, group) in enumerate(blocks):
        block_paths = paths[group * n_in : (group + 1) * n_in]
        solved = solve_block(
            block_paths, caps[start:end].T, shares[str(k)], options.alpha, options.beta
        )
        counts[start:end] = solved.T
    return counts, caps


def place_entries(
    alive: torch.Tensor, counts: np.ndarray, generator: torch.Generator
) -> torch.Tensor:
    """Switch on counts[j, i] live entries at random inside each kernel (j, i)."""
    if alive.numel() == 0:
        return alive.clone()
    kernels = alive.reshape(counts.size, -1)
    keys = torch.rand(kernels.shape, generator=generator, dtype=torch.float64)
    keys[~kernels] = -1.0  # dead entries come last and are never switched on
    order = keys.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(kernels.shape[1]).expand_as(order))
    keep = rank < torch.as_tensor(counts.reshape(-1, 1))
    return keep.reshape(alive.shape)


def _layer_groups(network: PathNetwork, names: list[str]) -> dict[str, int]:
    """The groups of each prunable layer, or Unsupported for a weight NPB cannot solve."""
    groups = {}
    for name in names:
        prefix, _, attr = name.rpartition(".")
        try:
            layer = network.module.get_submodule(prefix)
        except AttributeError:
            layer = None
        if attr != "weight" or not isinstance(layer, _LAYERS):
            kind = type(layer).__name__ if layer is not None else "no module"
            raise Unsupported(
                f"npb solves Linear and Conv layers one at a time; {name!r} belongs to {kind}",
                "leave it out with --exclude",
            )
        groups[name] = getattr(layer, "groups", 1)
    return groups


def _check_inputs(name: str, paths: torch.Tensor, expected: int) -> None:
    if paths.dim() != 1 or paths.numel() != expected:
        raise Unsupported(
            f"npb: the input of {name!r} has {paths.numel()} channels/features where "
            f"{expected} were expected (npb supports inputs laid out channels-first)"
        )


def npb_masks(
    module: torch.nn.Module,
    alive: Mapping[str, torch.Tensor],
    budgets: Mapping[str, int],
    input_shape: tuple[int, ...],
    options: NpbOptions,
    seeds: Mapping[str, int],
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """The NPB keep-mask of every prunable weight named in ``alive`` (current keep-masks)."""
    if isinstance(module, torch.fx.GraphModule):
        raise Unsupported(
            "npb solves the model layer by layer and needs its Linear/Conv modules; a .pt2 "
            "program is a flat graph",
            "prune the weights as .safetensors with --arch NAME instead",
        )
    network = PathNetwork(module, batchnorm="identity", device=device)
    groups = _layer_groups(network, list(alive))
    connectivity = {
        f"{name}.weight": layer.weight != 0
        for name, layer in network.module.named_modules()
        if name and isinstance(layer, _LAYERS) and f"{name}.weight" not in alive
    }
    network.set_weights({**connectivity, **alive})  # later layers: their live entries
    order = call_order(network, list(alive), input_shape)
    missing = [name for name in alive if name not in order]
    if missing:
        raise Unsupported(
            f"npb follows the forward pass layer by layer, and the layer of {missing[0]!r} is "
            "never called in it",
            "leave it out with --exclude",
        )
    masks: dict[str, torch.Tensor] = {}
    caps: dict[str, np.ndarray] = {}
    for name in order:
        paths = layer_inputs(network, [name], input_shape, stop_early=True)[name].to("cpu")
        live = alive[name].to("cpu")
        _check_inputs(name, paths, live.shape[1] * groups[name])
        values = paths.numpy()
        if not np.isfinite(values).all():  # beyond float64: the overflowing channels lead
            values = np.isposinf(values).astype(np.float64)
        counts, caps[name] = layer_counts(live, values, budgets[name], groups[name], options)
        generator = torch.Generator().manual_seed(seeds[name])
        masks[name] = place_entries(live, counts, generator)
        network.set_weights({name: masks[name]})
    refill_ineffective(
        network, masks, {name: alive[name].to("cpu") for name in masks}, caps, input_shape
    )
    return masks


@register
class Npb(Criterion):
    name = "npb"
    summary = (
        "node-path balancing: per layer, an integer program balancing effective nodes and "
        "paths on ERK budgets (a mask, for prune)"
    )
    needs = ("graph", "input_shape")
    options = {"alpha": NpbOptions.alpha, "beta": NpbOptions.beta, "max_p": NpbOptions.max_p}
    option_types = {"max_p": int}
    default_scope = "erk"
    chooses_mask = True

    def score(self, ctx: ScoreContext) -> Mapping[str, torch.Tensor]:
        if ctx.sparsity is None:
            raise Unsupported(
                "npb chooses a mask for a target sparsity; it has no per-weight scores to write",
                "run `prunecli prune --method npb --sparsity S`",
            )
        options = NpbOptions.from_options(ctx.options)
        module = ctx.model.require_graph(self.name)
        shape = ctx.input_shape or (ctx.model.arch.input_shape if ctx.model.arch else None)
        if shape is None:
            raise Unsupported(
                "npb needs the model's input shape", "pass --input-shape, e.g. 3,32,32"
            )
        shapes = {name: tuple(ctx.tensor(name).shape) for name in ctx.names}
        # the selection enforces these counts; global (one threshold) takes NPB's own, ERK
        scope = ctx.scope if ctx.scope in ("erk", "layer") else "erk"
        budgets = keep_counts(scope, shapes, ctx.sparsity)
        assert budgets is not None
        seeds = {
            name: stream_seed(ctx.seed, ctx.round, index, _STREAM)
            for index, name in enumerate(ctx.names)
        }
        alive = {name: ctx.alive(name) for name in ctx.names}
        masks = npb_masks(module, alive, budgets, tuple(shape), options, seeds, ctx.device)
        return {name: masks[name].to(torch.float32) for name in ctx.names}
