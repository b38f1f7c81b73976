"""NPB's integer program (topology/node_path_milp.py, DESIGN §3): optimal against brute force on
tiny instances, the reference's path norm, and the budget filled within the caps on a large one.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from prunecli.topology.node_path_milp import path_norm, solve_block


def objective(
    counts: np.ndarray, paths: np.ndarray, budget: int, alpha: float, beta: float, norm: float
) -> float:
    """The NPB objective, written from its definition (DESIGN §3; only path-carrying connections,
    P_in > 0, make a node active or count as a pair)."""
    carried = counts * (paths[:, None] > 0)
    n_in, n_out = counts.shape
    active = int((carried.sum(1) > 0).sum()) + int((carried.sum(0) > 0).sum())
    path_sum = float((paths[:, None] * counts).sum())
    balance = path_sum / norm if norm > 0 else 0.0
    pairs = int((carried > 0).sum())
    return alpha * active / (n_in + n_out) + (1 - alpha) * balance + beta * pairs / budget


def reference_norm(paths: np.ndarray, caps: np.ndarray, budget: int) -> float:
    """max_path as pvh1602/NPB computes it (Pruners/utils.py, optimize_layerwise): rows of
    n_out·max_p entries; the ``full`` best inputs fill whole rows and the next takes the rest —
    except that with full = 0 its slice ``np.sort(P_in)[-0:]`` is every input."""
    row = caps.shape[1] * int(caps.max())
    ranked = sorted(float(p) for p in paths)
    full = budget // row
    norm = sum(ranked[len(ranked) - full :] if full else ranked) * row
    if full < len(ranked):
        norm += (budget - full * row) * ranked[len(ranked) - full - 1]
    return norm


def brute_force(
    paths: np.ndarray, caps: np.ndarray, budget: int, alpha: float, beta: float
) -> tuple[float, float]:
    """(best objective, the paths term's norm) over every integer M, 0 ≤ M ≤ caps, Σ M = budget."""
    feasible = [
        np.array(values).reshape(caps.shape)
        for values in itertools.product(*(range(c + 1) for c in caps.reshape(-1)))
        if sum(values) == budget
    ]
    norm = reference_norm(paths, caps, budget)
    return max(objective(m, paths, budget, alpha, beta, norm) for m in feasible), norm


def tiny_instances() -> list[tuple[np.ndarray, np.ndarray, int, float, float]]:
    rng = np.random.default_rng(2024)
    instances = []
    for alpha, beta in [(0.01, 1.0), (0.5, 1.0), (1.0, 0.0), (0.0, 3.0), (0.3, 0.2), (0.9, 0.0)]:
        for _ in range(2):
            n_in, n_out = rng.choice([2, 3]), rng.choice([2, 3])
            caps = rng.integers(0, 4, size=(n_in, n_out))
            while np.prod(caps + 1) > 5000 or caps.sum() == 0:
                caps = rng.integers(0, 3, size=(n_in, n_out))
            paths = rng.choice([0.0, 1.0, 2.5, 7.0, 100.0], size=n_in)
            budget = int(rng.integers(1, caps.sum() + 1))
            instances.append((paths, caps, budget, alpha, beta))
    return instances


@pytest.mark.parametrize("instance", tiny_instances())
def test_integer_program_reaches_the_brute_force_optimum(instance) -> None:
    paths, caps, budget, alpha, beta = instance
    counts = solve_block(paths, caps, budget, alpha, beta, mip_gap=0.0)
    assert counts.sum() == budget
    assert (counts >= 0).all() and (counts <= caps).all()
    optimum, norm = brute_force(paths, caps, budget, alpha, beta)
    found = objective(counts, paths, budget, alpha, beta, norm)
    assert found == pytest.approx(optimum, rel=1e-9, abs=1e-12)


def test_path_norm_is_the_references_max_path() -> None:
    paths = np.array([2.0, 3.0, 1.0])  # rows of n_out·max_p = 2·2 = 4 entries
    assert path_norm(paths, 2, 2, 3) == 6 * 4 + 3 * 3  # below one row: every input, + budget·max
    assert path_norm(paths, 2, 2, 5) == 3 * 4 + 1 * 2  # one full row (3), the rest on the next (2)
    assert path_norm(paths, 2, 2, 12) == 6 * 4  # every row full


def test_integer_program_fills_the_budget_within_the_caps() -> None:
    rng = np.random.default_rng(7)
    caps = rng.integers(0, 10, size=(64, 48))
    paths = np.where(rng.random(64) < 0.2, 0.0, 10 ** rng.uniform(0, 6, 64))
    for budget in (1, 300, int(caps.sum()) - 5):
        counts = solve_block(paths, caps, budget, 0.01, 1.0)
        assert counts.sum() == budget and (counts >= 0).all() and (counts <= caps).all()
    too_many = solve_block(paths, caps, int(caps.sum()) + 10, 0.01, 1.0)
    assert np.array_equal(too_many, caps)  # everything there is
