"""The node-path integer program of NPB (criteria/npb.py), one block of a layer at a time.

With P_in[i] the number of paths that reach input channel i, it picks M_ij, the number of kept
kernel entries between input channel i and output channel j:

    maximise  α·A + (1−α)·B + β·R   subject to  Σ M_ij = budget,  0 ≤ M_ij ≤ cap_ij

A = fraction of the block's input and output nodes that keep a connection, B = Σ P_in[i]·M_ij over
the reference's norm (:func:`path_norm`), R = distinct kept (i, j) pairs over the budget. Only
connections that can carry paths (P_in[i] > 0) make a node active or count as a pair. Solved with
SciPy's HiGHS (:func:`scipy.optimize.milp`) under a deterministic node limit; NumPy in, NumPy out.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

MIP_GAP = 1e-4
#: branch-and-bound nodes per subproblem: a deterministic limit (a time limit is not)
NODE_LIMIT = 1000
#: a safety net only; when it is hit the best solution found so far is used
TIME_LIMIT_S = 60.0


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
