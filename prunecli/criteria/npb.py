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
entries that add the most paths.

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
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from prunecli.criteria.registry import register
from prunecli.errors import BadInput, Unsupported
from prunecli.pruning.allocation import keep_counts, round_to_total
from prunecli.pruning.criterion import Criterion, ScoreContext
from prunecli.pruning.seeding import stream_seed
from prunecli.topology.pathnet import PathNetwork, call_order, layer_inputs

#: layers with more (input, output) channel pairs than this are solved in chunks of output
#: channels: the reference's ResNet-20 rule (32 outputs above 64×32 pairs); smaller chunks also
#: solve faster in HiGHS
MAX_BLOCK_PAIRS = 2048
MIP_GAP = 1e-4
#: branch-and-bound nodes per subproblem: a deterministic limit (a time limit is not)
NODE_LIMIT = 1000
#: a safety net only; when it is hit the best solution found so far is used
TIME_LIMIT_S = 60.0
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


def path_norm(paths: np.ndarray, n_out: int, max_p: int, budget: int) -> float:
    """What Σ P_in[i]·M_ij is divided by: the reference's ``max_path`` (Pruners/utils.py,
    ``optimize_layerwise``), with a row of n_out·max_p entries per input.

    With ``full`` = budget // row rows, it is the value of filling the ``full`` inputs with the
    most paths and putting the remainder on the next one — the best achievable. Below one row
    (full = 0, the rule at high sparsity) the reference's slice ``sorted(P_in)[-0:]`` takes every
    input, so the norm is row·ΣP_in + budget·max P_in: the paths of the layer with every kernel
    at max_p. That keeps the path term small enough for the node term to spread connections
    over inputs whose path counts are close (see docs/criteria.md).
    """
    row = max(int(n_out) * int(max_p), 1)
    ranked = np.sort(np.asarray(paths, dtype=np.float64))
    full = int(budget) // row
    top = ranked[-full:] if full else ranked
    norm = float(top.sum()) * row
    if full < ranked.size:
        norm += (int(budget) - full * row) * float(ranked[-(full + 1)])
    return norm


def solve_block(
    paths: np.ndarray,
    caps: np.ndarray,
    budget: int,
    alpha: float,
    beta: float,
    mip_gap: float = MIP_GAP,
) -> np.ndarray:
    """M (inputs × outputs, integers) maximising the NPB objective with Σ M = budget, M ≤ caps.

    A budget above Σ caps is clipped to it. A solution uses at most ``budget`` rows and columns,
    and the objective is symmetric in the outputs and favours inputs with more paths, so only
    the leading ``budget`` rows (by P_in) and columns of each set of identical rows (columns) of
    ``caps`` can be needed: moving a used row or column onto a leading one of its set loses
    nothing. The program is built over those alone.
    """
    caps = np.asarray(caps, dtype=np.int64)
    paths = np.asarray(paths, dtype=np.float64)
    budget = min(int(budget), int(caps.sum()))
    counts = np.zeros_like(caps)
    if budget <= 0:
        return counts
    n_in, n_out = caps.shape
    by_paths = np.lexsort((np.arange(n_in), -paths))
    rows = _leading(by_paths, caps, budget)
    cols = _leading(np.arange(n_out), caps.T, budget)
    block = np.ix_(rows, cols)
    counts[block] = _solve(
        paths[rows],
        caps[block],
        budget,
        (alpha, beta),
        path_norm(paths, n_out, int(caps.max()), budget),
        n_in + n_out,
        mip_gap,
    )
    return _fill_exactly(counts, paths, caps, budget)


def _leading(order: np.ndarray, caps: np.ndarray, limit: int) -> np.ndarray:
    """The first ``limit`` indices in ``order`` of each set of identical rows of ``caps``."""
    _, sets = np.unique(caps, axis=0, return_inverse=True)
    sets = sets.reshape(-1)[order]
    grouped = np.argsort(sets, kind="stable")  # keeps ``order`` inside each set
    starts = np.flatnonzero(np.r_[True, np.diff(sets[grouped]) != 0])
    rank = np.empty(order.size, np.int64)
    rank[grouped] = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    return np.sort(order[rank < limit])


def _solve(
    paths: np.ndarray,
    caps: np.ndarray,
    budget: int,
    weights: tuple[float, float],
    norm: float,
    n_nodes: int,
    mip_gap: float,
) -> np.ndarray:
    """The integer program itself. Indicators z (pair kept), u (input node active), v (output
    node active) are binaries linked to M by z ≤ M ≤ cap·z, u_i ≤ Σ_j z_ij, v_j ≤ Σ_i z_ij; a
    pair of capacity 1 is its own indicator. ``norm`` normalises the paths term, ``n_nodes``
    the nodes term (both those of the whole block)."""
    alpha, beta = weights
    n_out = caps.shape[1]
    rows, cols = np.nonzero(caps)
    cap = caps[rows, cols].astype(np.float64)
    pairs = rows.size
    live = np.flatnonzero(paths[rows] > 0)  # pairs that can carry paths
    wide = live[cap[live] > 1]  # these need an indicator of their own
    ins, in_of = np.unique(rows[live], return_inverse=True)
    outs, out_of = np.unique(cols[live], return_inverse=True)
    z = pairs + np.arange(wide.size)
    indicator = np.arange(pairs)
    indicator[wide] = z
    indicator = indicator[live]
    u = pairs + wide.size + np.arange(ins.size)
    v = pairs + wide.size + ins.size + np.arange(outs.size)
    n_vars = pairs + wide.size + ins.size + outs.size

    # maximise → minimise the negation; scaled by the budget so the costs are O(1)
    cost = np.zeros(n_vars)
    if norm > 0:
        cost[:pairs] -= (1.0 - alpha) * budget * paths[rows] / norm
    cost[indicator] -= beta
    cost[u] -= alpha * budget / n_nodes
    cost[v] -= alpha * budget / n_nodes

    # constraint rows as (row, column, value) triplets; row 0 is the budget
    one = np.ones(wide.size)
    rows_wide = 1 + np.arange(wide.size)
    rows_big_m = rows_wide + wide.size
    first = 1 + 2 * wide.size
    triplets = [
        (np.zeros(pairs, np.int64), np.arange(pairs), np.ones(pairs)),  # Σ M = budget
        (rows_wide, z, one),
        (rows_wide, wide, -one),  # z ≤ M
        (rows_big_m, wide, one),
        (rows_big_m, z, -cap[wide]),  # M ≤ cap·z
    ]
    for nodes, node_of in ((u, in_of), (v, out_of)):  # node ≤ Σ of its pairs' indicators
        triplets.append((first + np.arange(nodes.size), nodes, np.ones(nodes.size)))
        triplets.append((first + node_of, indicator, -np.ones(live.size)))
        first += nodes.size
    row, col, value = (np.concatenate(part) for part in zip(*triplets, strict=True))
    matrix = coo_array((value, (row, col)), shape=(first, n_vars)).tocsr()
    lower = np.full(first, -np.inf)
    upper = np.zeros(first)
    lower[0] = upper[0] = budget
    result = milp(
        cost,
        integrality=np.ones(n_vars),
        bounds=Bounds(np.zeros(n_vars), np.concatenate([cap, np.ones(n_vars - pairs)])),
        constraints=LinearConstraint(matrix, lower, upper),
        options={
            "mip_rel_gap": mip_gap,
            "node_limit": NODE_LIMIT,
            "time_limit": TIME_LIMIT_S,
            "disp": False,
            "presolve": False,  # HiGHS presolve is slow on these models and gains nothing
        },
    )
    counts = np.zeros_like(caps)
    if result.x is None:  # no feasible point found within the limits
        counts[rows, cols] = _spread(paths, rows, cols, caps[rows, cols], budget, n_out)
    else:
        counts[rows, cols] = np.clip(np.rint(result.x[:pairs]), 0, cap).astype(np.int64)
    return counts


def _spread(
    paths: np.ndarray, rows: np.ndarray, cols: np.ndarray, cap: np.ndarray, budget: int, n_out: int
) -> np.ndarray:
    """A feasible fallback: one entry per pair along diagonals (covers most nodes first)."""
    rank = np.empty(paths.size, np.int64)
    rank[np.argsort(-paths, kind="stable")] = np.arange(paths.size)
    diagonal = (cols - rank[rows]) % max(n_out, 1)
    order = np.lexsort((rank[rows], diagonal, paths[rows] <= 0))
    counts = np.zeros(rows.size, np.int64)
    counts[order[:budget]] = np.minimum(cap[order[:budget]], 1)
    return counts


def _fill_exactly(
    counts: np.ndarray, paths: np.ndarray, caps: np.ndarray, budget: int
) -> np.ndarray:
    """Top up (largest P_in first) or trim (smallest first) so that Σ counts = budget exactly."""
    weights = np.repeat(paths, caps.shape[1])
    flat = counts.reshape(-1).copy()
    short = budget - int(flat.sum())
    if short > 0:
        order = np.argsort(-weights, kind="stable")
        room = (caps.reshape(-1) - flat)[order]
        add = np.clip(short - (np.cumsum(room) - room), 0, room)
        flat[order] += add
    elif short < 0:
        order = np.argsort(weights, kind="stable")
        have = flat[order]
        drop = np.clip(-short - (np.cumsum(have) - have), 0, have)
        flat[order] -= drop
    return flat.reshape(counts.shape)


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


def _path_gradients(
    network: PathNetwork, masks: Mapping[str, torch.Tensor], input_shape: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """∂(paths)/∂(mask entry) for every entry: the paths through it (kept) or that switching it
    on would add (pruned) — the network is linear in each single entry."""
    network.set_weights(dict(masks))
    params = {name: network.parameter(name) for name in masks}
    for param in params.values():
        param.grad = None
        param.requires_grad_(True)
    with torch.enable_grad():
        network.module(network.ones(input_shape)).sum().backward()
    grads = {name: param.grad.detach().to("cpu") for name, param in params.items()}
    for param in params.values():
        param.grad = None
        param.requires_grad_(False)
    return grads


def _refill(
    network: PathNetwork,
    masks: dict[str, torch.Tensor],
    alive: Mapping[str, torch.Tensor],
    caps: Mapping[str, np.ndarray],
    input_shape: tuple[int, ...],
) -> None:
    """Move the budget of kept weights on no input→output path to the live entries (within each
    kernel's cap) that add the most paths.

    Dropping ineffective weights changes no path count; the gains are then measured on the
    cleaned network, where a positive gain means both channels are effective, so every entry
    switched on is effective and stays so (adding entries only adds paths).
    """
    ineffective = {
        name: mask & ~(gain > 0)
        for (name, mask), gain in zip(
            masks.items(), _path_gradients(network, masks, input_shape).values(), strict=True
        )
    }
    cleaned = {name: masks[name] & ~ineffective[name] for name in masks}
    gains = _path_gradients(network, cleaned, input_shape)
    for name, mask in masks.items():
        dropped = torch.nonzero(ineffective[name].reshape(-1)).reshape(-1)
        if dropped.numel() == 0:
            continue
        n_kernels = mask.shape[0] * mask.shape[1]
        gain = gains[name].reshape(n_kernels, -1)
        free = (alive[name] & ~mask).reshape(n_kernels, -1) & (gain > 0)
        # room left under the cap even if every dropped entry had to be restored
        room = torch.as_tensor(caps[name].reshape(-1)) - mask.reshape(n_kernels, -1).sum(1)
        keys = torch.where(free, gain, torch.zeros((), dtype=gain.dtype))
        order = keys.argsort(dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(keys.shape[1]).expand_as(order))
        candidates = torch.nonzero((free & (rank < room.reshape(-1, 1))).reshape(-1)).reshape(-1)
        best = keys.reshape(-1)[candidates].argsort(descending=True, stable=True)
        moved = min(dropped.numel(), candidates.numel())
        flat = mask.reshape(-1).clone()
        flat[dropped[:moved]] = False
        flat[candidates[best[:moved]]] = True
        masks[name] = flat.reshape(mask.shape)


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
    _refill(network, masks, {name: alive[name].to("cpu") for name in masks}, caps, input_shape)
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
    default_scope = "erk"

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
