"""N:M patterns and per-row selection (structure/nm.py), each against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunecli.errors import BadInput
from prunecli.structure.nm import (
    Pattern,
    check_shapes,
    compliance,
    keep_keys,
    nm_keep,
    parse_pattern,
    row_keep,
)


def brute_nm(score: torch.Tensor, alive: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Per group of m, in a Python loop: keep the n highest live scores; among equal scores
    the later position wins (the engine prunes the earliest first)."""
    flat_s, flat_a = score.reshape(-1).tolist(), alive.reshape(-1).tolist()
    keep = [False] * len(flat_s)
    for start in range(0, len(flat_s), m):
        live = [i for i in range(start, start + m) if flat_a[i]]
        # highest score first; on a tie the larger index first
        ranked = sorted(live, key=lambda i: (flat_s[i], i), reverse=True)
        for i in ranked[:n]:
            keep[i] = True
    return torch.tensor(keep).reshape(score.shape)


@pytest.mark.parametrize("text", ["3:2", "0:4", "4:4", "2:1", "a:4", "2/4", "1:65", "2.5:4"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(BadInput):
        parse_pattern(text)


def test_parse() -> None:
    assert parse_pattern("2:4") == Pattern(2, 4)
    assert parse_pattern(" 4 : 8 ").sparsity == 0.5
    assert str(parse_pattern("1:3")) == "1:3"


def test_magnitude_2_4_equals_brute_force_top2() -> None:
    weight = torch.randn(8, 24, generator=torch.Generator().manual_seed(1))
    weight[0, :4] = 0.0  # a group already empty
    weight[1, 4:7] = 0.0  # a group with one live weight
    alive = weight != 0
    keep = nm_keep(weight.abs(), alive, Pattern(2, 4))
    assert torch.equal(keep, brute_nm(weight.abs(), alive, 2, 4))
    # the same with torch.topk per group where every weight is live
    top = torch.topk(weight.abs()[2:].reshape(-1, 4), 2, dim=1).indices
    direct = torch.zeros(top.shape[0], 4, dtype=torch.bool).scatter_(1, top, True)
    assert torch.equal(keep[2:].reshape(-1, 4), direct)
    counts = keep.reshape(-1, 4).sum(dim=1)
    assert int(counts.max()) == 2 and int(counts[0]) == 0 and int(counts[7]) == 1


def test_ties_prune_earliest_first() -> None:
    score = torch.tensor([[1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 0.5]])
    keep = nm_keep(score, torch.ones_like(score, dtype=torch.bool), Pattern(2, 4))
    assert keep.tolist() == [[False, False, True, True, True, False, True, False]]
    assert torch.equal(keep, brute_nm(score, torch.ones_like(keep), 2, 4))


def test_conv_groups_run_along_the_flattened_row() -> None:
    weight = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    with pytest.raises(BadInput, match="'conv'.*18 inputs"):
        check_shapes({"conv": weight.shape}, Pattern(2, 4))
    keep = nm_keep(weight.abs(), weight != 0, Pattern(1, 3))
    assert torch.equal(keep, brute_nm(weight.abs(), weight != 0, 1, 3))
    assert compliance("conv", weight * keep, Pattern(1, 3)).broken == 0


def test_keep_keys_matches_torch() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 5, size=64).astype(np.float32)  # many ties and zeros
    keys = values.view(np.uint32)
    expected = nm_keep(torch.from_numpy(values), torch.from_numpy(values != 0), Pattern(3, 8))
    assert keep_keys(keys, Pattern(3, 8)).tolist() == expected.tolist()


def test_row_keep_exact_counts() -> None:
    score = torch.rand(5, 30, generator=torch.Generator().manual_seed(4))
    alive = torch.ones_like(score, dtype=torch.bool)
    alive[0, :20] = False  # a row sparser than asked keeps its zeros
    keep = row_keep(score, alive, 0.55)  # round(16.5) = 16 (half to even) zeros per row
    assert keep.sum(dim=1).tolist() == [10, 14, 14, 14, 14]
    for row in range(1, 5):
        kept = set(torch.topk(score[row], 14).indices.tolist())
        assert kept == set(torch.nonzero(keep[row]).reshape(-1).tolist())


def test_compliance_counts_broken_groups() -> None:
    tensor = torch.tensor([[1.0, 1.0, 0.0, -0.0, 1.0, 1.0, 1.0, 0.0]])
    found = compliance("w", tensor, Pattern(2, 4))
    assert (found.groups, found.broken, found.checkable) == (2, 1, True)
    assert not compliance("w", torch.ones(2, 6), Pattern(2, 4)).checkable
