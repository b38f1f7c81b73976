"""Per-layer mathematics of calibrated pruning: input statistics, Wanda, SparseGPT.

Each value is checked against an independent route: a direct torch computation from the
captured inputs, a closed form, or the port of the reference SparseGPT loop.
"""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.bench_sparsegpt import correlated_inputs, reference_fasterprune
from prunecli.calibration import sparsegpt as sparsegpt_module
from prunecli.calibration.sparsegpt import sparsegpt_prune
from prunecli.calibration.stats import ColumnNorms, Hessian, NonFiniteInput
from prunecli.calibration.wanda import prune_rows, wanda_mask, wanda_scores
from prunecli.errors import BadInput


def _output_error(weight: torch.Tensor, pruned: torch.Tensor, inputs: torch.Tensor) -> float:
    x = inputs.reshape(-1, inputs.shape[-1]).double()
    return float((x @ (weight.double() - pruned.double()).T).norm())


def _magnitude(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per-layer magnitude: zero the round(S·numel) smallest |w|."""
    flat = weight.reshape(-1).clone()
    flat[torch.topk(flat.abs(), round(sparsity * flat.numel()), largest=False).indices] = 0
    return flat.reshape(weight.shape)


def _hessian(inputs: torch.Tensor) -> torch.Tensor:
    stats = Hessian(inputs.shape[-1])
    stats.add(inputs)
    return stats.matrix()


# ---- input statistics ----------------------------------------------------------------------


def test_statistics_equal_direct_sums_over_batches_in_any_dtype() -> None:
    g = torch.Generator().manual_seed(0)
    first = torch.randn(3, 5, 8, generator=g).to(torch.bfloat16)  # 3 sequences of 5 tokens
    second = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    norms, hessian = ColumnNorms(8), Hessian(8)
    for batch in (first, second):
        norms.add(batch)
        hessian.add(batch)
    tokens = torch.cat([first.double().reshape(-1, 8), second.reshape(-1, 8)])
    torch.testing.assert_close(norms.squares, (tokens**2).sum(0), rtol=1e-12, atol=0)
    torch.testing.assert_close(norms.norms(), tokens.norm(dim=0), rtol=1e-12, atol=0)
    # n counts sequences (3 + 2), as the reference's add_batch: H = 2·XᵀX/5
    torch.testing.assert_close(hessian.matrix(), 2 * tokens.T @ tokens / 5, rtol=1e-12, atol=0)
    # the reference's recurrence H ← H·n/(n+b) + (2/(n+b))·XXᵀ, by hand
    running, n = torch.zeros(8, 8, dtype=torch.float64), 0
    for batch in (first, second):
        x = batch.double().reshape(-1, 8)
        running = running * n / (n + batch.shape[0]) + 2 / (n + batch.shape[0]) * x.T @ x
        n += batch.shape[0]
    torch.testing.assert_close(hessian.matrix(), running, rtol=1e-12, atol=1e-12)
    assert (hessian.samples, hessian.tokens, norms.tokens) == (5, 25, 25)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_statistics_refuse_non_finite_inputs_naming_the_layer(bad: float) -> None:
    inputs = torch.ones(2, 4, 8, dtype=torch.float16)
    inputs[1, 2, 3] = bad
    for stats in (ColumnNorms(8, "layers.3.mlp.up_proj"), Hessian(8, "layers.3.mlp.up_proj")):
        with pytest.raises(NonFiniteInput, match="layers.3.mlp.up_proj") as caught:
            stats.add(inputs)
        assert isinstance(caught.value, BadInput) and caught.value.layer == "layers.3.mlp.up_proj"
    with pytest.raises(BadInput, match=r"expected \(\.\.\., 8\)"):
        Hessian(8).add(torch.ones(2, 7))


# ---- Wanda -----------------------------------------------------------------------------------


def test_wanda_scores_and_per_row_counts_from_a_captured_input() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 10, bias=False)
    captured: list[torch.Tensor] = []
    layer.register_forward_hook(lambda module, args, out: captured.append(args[0].detach()))
    layer(correlated_inputs(64, 24).reshape(4, 16, 24))
    norms = ColumnNorms(24)
    norms.add(captured[0])
    x = captured[0].reshape(-1, 24).double()
    direct = layer.weight.detach().double().abs() * x.norm(dim=0)
    torch.testing.assert_close(
        wanda_scores(layer.weight, norms.squares), direct, rtol=1e-12, atol=0
    )
    keep = wanda_mask(layer.weight, norms.squares, 0.3)  # round(0.3·24) = 7 per row
    assert keep.shape == (10, 24) and (keep.sum(1) == 17).all()
    for row in range(10):  # the pruned are exactly the 7 lowest of their row
        assert direct[row][~keep[row]].max() < direct[row][keep[row]].min()


def test_wanda_breaks_ties_by_column() -> None:
    weight = torch.tensor([[1.0, -1.0, 1.0, 2.0], [3.0, 1.0, 1.0, 1.0]])
    keep = wanda_mask(weight, torch.ones(4), 0.5)
    assert keep.tolist() == [[False, False, True, True], [True, False, False, True]]


@pytest.mark.parametrize("chunk", [1, 7, 64, 10**6])
def test_wanda_mask_scored_a_few_rows_at_a_time_equals_the_whole_layer(chunk, monkeypatch) -> None:
    from prunecli.calibration import wanda as wanda_module

    gen = torch.Generator().manual_seed(4)
    weight = torch.randint(-3, 4, (37, 16), generator=gen).float()  # ties everywhere
    squares = torch.rand(16, generator=gen, dtype=torch.float64)
    whole = prune_rows(wanda_scores(weight, squares), 0.4)
    monkeypatch.setattr(wanda_module, "CHUNK", chunk)
    assert torch.equal(wanda_mask(weight, squares, 0.4), whole)
    assert torch.equal(weight.abs().max(), torch.tensor(3.0))  # the weight itself untouched


# ---- SparseGPT -------------------------------------------------------------------------------


def test_sparsegpt_at_sparsity_zero_returns_the_weight() -> None:
    weight = torch.randn(32, 48, generator=torch.Generator().manual_seed(1))
    hessian = _hessian(correlated_inputs(256, 48))
    pruned, keep = sparsegpt_prune(weight, hessian, 0.0, dampening=0.0)
    assert keep.all()
    torch.testing.assert_close(pruned, weight, rtol=0, atol=0)


def test_sparsegpt_prunes_the_exact_count_even_at_ties() -> None:
    g = torch.Generator().manual_seed(2)
    weight = torch.randint(-2, 3, (40, 200), generator=g).float()  # five values: ties everywhere
    hessian = torch.eye(200, dtype=torch.float64)  # w²/U_jj² = w²: ties stay ties
    for sparsity in (0.3, 0.55, 0.77):
        pruned, keep = sparsegpt_prune(weight, hessian, sparsity, dampening=0.0)
        assert int((~keep).sum()) == round(sparsity * weight.numel())
        assert int((pruned == 0).sum()) == int((~keep).sum()) + int(((weight == 0) & keep).sum())
        assert not torch.signbit(pruned[pruned == 0]).any()  # +0.0, never -0.0
    # the reference's <= threshold prunes every tie of the threshold
    reference = reference_fasterprune(weight, hessian, 0.3, percdamp=0.0)
    assert int((reference == 0).sum()) > round(0.3 * weight.numel())


@pytest.mark.parametrize("pattern", [(2, 4), (4, 8), (1, 4)])
def test_sparsegpt_n_m_keeps_at_most_n_per_group(pattern: tuple[int, int]) -> None:
    n, m = pattern
    weight = torch.randn(24, 64, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    pruned, keep = sparsegpt_prune(weight, _hessian(correlated_inputs(256, 64)), pattern=pattern)
    assert pruned.dtype == torch.bfloat16
    assert ((pruned != 0).reshape(24, -1, m).sum(-1) <= n).all()
    assert (keep.reshape(24, -1, m).sum(-1) == n).all()
    assert not torch.signbit(pruned[pruned == 0]).any()


@pytest.mark.parametrize("pattern", [(2, 4), (1, 4), (3, 8)])
def test_sparsegpt_n_m_pairwise_choice_equals_kthvalue_at_ties(pattern, monkeypatch) -> None:
    """With H = I every saliency is w², and integer weights tie everywhere: the pairwise count
    (m <= 8) and the k-th value route keep the same weights (ties: the earlier one pruned)."""
    weight = torch.randint(-2, 3, (16, 32), generator=torch.Generator().manual_seed(8)).float()
    eye = torch.eye(32, dtype=torch.float64)
    pairwise = sparsegpt_prune(weight, eye, pattern=pattern, dampening=0.0)[1]
    monkeypatch.setattr(sparsegpt_module, "_PAIRWISE_UP_TO", 0)
    assert torch.equal(pairwise, sparsegpt_prune(weight, eye, pattern=pattern, dampening=0.0)[1])
    # the first group by hand: row 0 keeps the n largest |w|, the later one at a tie
    n, m = pattern
    group = weight[0, :m].abs().tolist()
    ranked = sorted(range(m), key=lambda j: (group[j], j))[m - n :]
    assert pairwise[0, :m].nonzero().reshape(-1).tolist() == sorted(ranked)


def _llama_mlp_inputs() -> torch.Tensor:
    """Inputs of the first MLP of a tiny random Llama on token ids (its norm weights log-normal,
    as trained models' outlier features make them)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.LlamaModel(config).eval()
    norm = model.layers[0].post_attention_layernorm.weight
    norm.data = torch.exp(torch.randn(64, generator=torch.Generator().manual_seed(5)))
    captured: list[torch.Tensor] = []
    up = model.layers[0].mlp.up_proj
    up.register_forward_hook(lambda module, args, out: captured.append(args[0].detach()))
    ids = torch.randint(0, 128, (8, 32), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        model(input_ids=ids)
    return captured[0]


@pytest.mark.parametrize("source", ["random", "llama"])
def test_sparsegpt_error_below_wanda_below_magnitude(source: str) -> None:
    inputs = correlated_inputs(512, 64, seed=4) if source == "random" else _llama_mlp_inputs()
    weight = torch.randn(96, 64, generator=torch.Generator().manual_seed(7)) / 8
    norms = ColumnNorms(64)
    norms.add(inputs)
    wanda = weight * wanda_mask(weight, norms.squares, 0.5)
    sparsegpt, _ = sparsegpt_prune(weight, _hessian(inputs), 0.5)
    errors = [_output_error(weight, w, inputs) for w in (sparsegpt, wanda, _magnitude(weight, 0.5))]
    assert errors[0] < errors[1] < errors[2], errors


def test_sparsegpt_with_a_diagonal_hessian_is_magnitude_scaled_by_h() -> None:
    """H = diag(h): U = diag(1/√h), so the saliency w²/U_jj² is w²·h_j, and U_ij = 0 off the
    diagonal: no other weight is updated. The mask is then per 128-column block the
    round(S·rows·end) − round(S·rows·start) lowest w²·h_j (row-major ties)."""
    rows, columns, sparsity = 16, 192, 0.4
    g = torch.Generator().manual_seed(8)
    weight = torch.randn(rows, columns, generator=g)
    h = 4.0 ** torch.randint(-2, 3, (columns,), generator=g).double()  # 1/√h exact in floats
    pruned, keep = sparsegpt_prune(weight, torch.diag(h), sparsity, dampening=0.0)
    saliency = weight.double() ** 2 * h
    expected = torch.ones(rows, columns, dtype=torch.bool)
    for start, end in ((0, 128), (128, 192)):
        count = round(sparsity * rows * end) - round(sparsity * rows * start)
        block = saliency[:, start:end].reshape(-1)
        lowest = torch.sort(block, stable=True).indices[:count]
        flat = expected[:, start:end].reshape(-1)
        flat[lowest] = False
        expected[:, start:end] = flat.reshape(rows, end - start)
    assert torch.equal(keep, expected)
    assert torch.equal(pruned[keep], weight[keep])
    assert (pruned[~keep] == 0).all()


def test_sparsegpt_equals_the_reference_loop_without_ties() -> None:
    """Same masks and weights as the port of the reference. The reference prunes every score ≤
    its block's ``int(S·numel)``-th smallest, one more than that; S is chosen so that the
    exact cumulative count gives the same number per block (4097 of 64·128 in each)."""
    inputs = correlated_inputs(1024, 256, seed=9)
    weight = torch.randn(64, 256, generator=torch.Generator().manual_seed(10)) / 16
    hessian = _hessian(inputs)
    sparsity = 4096.75 / 8192
    pruned, keep = sparsegpt_prune(weight, hessian, sparsity)
    reference = reference_fasterprune(weight, hessian, sparsity)
    assert torch.equal(keep, reference != 0)
    torch.testing.assert_close(pruned, reference, rtol=1e-4, atol=1e-5)
    pruned, keep = sparsegpt_prune(weight, hessian, pattern=(2, 4))
    reference = reference_fasterprune(weight, hessian, 0, prunen=2, prunem=4)
    assert torch.equal(keep, reference != 0)
    torch.testing.assert_close(pruned, reference, rtol=1e-4, atol=1e-5)


def test_sparsegpt_dead_inputs_get_zero_columns() -> None:
    inputs = correlated_inputs(256, 32, seed=11)
    inputs[:, [3, 17]] = 0
    weight = torch.randn(8, 32, generator=torch.Generator().manual_seed(12))
    hessian = _hessian(inputs)
    given = (weight.clone(), hessian.clone())
    pruned, _ = sparsegpt_prune(weight, hessian, 0.25)
    assert (pruned[:, [3, 17]] == 0).all()
    assert not torch.signbit(pruned[pruned == 0]).any()
    assert torch.equal(weight, given[0]) and torch.equal(hessian, given[1])  # inputs untouched


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pattern": (3, 2)}, "0 < N < M"),
        ({"pattern": (0, 4)}, "0 < N < M"),
        ({"pattern": (2, 3)}, "input size of blocks.0.fc1, 8, is not a multiple of 3"),
        ({"pattern": (2, 4), "sparsity": 0.7}, "not sparsity 0.7"),
        ({"sparsity": 1.5}, "sparsity must be within"),
        ({}, "sparsity must be within"),
    ],
)
def test_sparsegpt_refuses_bad_requests(kwargs: dict, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        sparsegpt_prune(torch.ones(4, 8), torch.eye(8), layer="blocks.0.fc1", **kwargs)


def test_sparsegpt_refuses_a_singular_hessian_without_dampening() -> None:
    inputs = torch.randn(4, 8, generator=torch.Generator().manual_seed(13))  # rank 4 < 8
    with pytest.raises(BadInput, match="not positive definite"):
        sparsegpt_prune(torch.ones(4, 8), _hessian(inputs), 0.5, dampening=0.0)
