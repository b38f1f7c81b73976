"""A transformer's FFN neurons and attention heads as groups (structure/transformer.py): the
smaller model built by transformers from the shrunk config, given the shrunk tensors, computes
what the original computes with the removed units' outputs zeroed by hand; the uniform count per
block (structure/units.py) against hand arithmetic; the refit from the inputs' Gram matrix
(structure/reconstruct.py) against a direct least-squares solve."""

from __future__ import annotations

import pytest
import torch

from prunecli.errors import BadInput, Unsupported
from prunecli.structure.groups import shrink_tensors
from prunecli.structure.reconstruct import InputGram
from prunecli.structure.transformer import (
    block_linears,
    shrunk_config,
    transformer_groups,
)
from prunecli.structure.units import uniform_keep, unit_scores

transformers = pytest.importorskip("transformers")
t = transformers
VOCAB = 32
DECODER = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
ATTENTION = {"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}


def tiny(kind: str):  # noqa: ANN201
    """(model, where its blocks sit) of a tiny ``kind`` (width 32, 2 blocks, GQA 4/2 heads)."""
    torch.manual_seed(0)
    if kind == "llama":
        return t.LlamaForCausalLM(t.LlamaConfig(**DECODER, **ATTENTION)), "model.layers"
    if kind == "qwen2":  # biased q/k/v
        return t.Qwen2ForCausalLM(t.Qwen2Config(**DECODER, **ATTENTION)), "model.layers"
    if kind == "bert":
        config = t.BertConfig(**DECODER, num_attention_heads=4, max_position_embeddings=64)
        return t.BertModel(config, add_pooling_layer=False), "encoder.layer"
    if kind == "gpt2":  # Conv1D: weights stored in × out
        config = t.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=64, vocab_size=VOCAB)
        return t.GPT2LMHeadModel(config), "transformer.h"
    config = t.OPTConfig(
        vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32,
    )  # fmt: skip
    return t.OPTForCausalLM(config), "model.decoder.layers"


def output(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


# per family: the consumer of a neuron (the FFN's down layer) and whether it stores in × out
DOWN = {
    "llama": ("mlp.down_proj", False),
    "qwen2": ("mlp.down_proj", False),
    "bert": ("output.dense", False),
    "gpt2": ("mlp.c_proj", True),
    "opt": ("fc2", False),
}


@pytest.mark.parametrize(
    ("kind", "granularity"),
    [("llama", "neuron"), ("llama", "head"), ("qwen2", "head"), ("bert", "neuron"),
     ("gpt2", "neuron"), ("opt", "neuron")],
)  # fmt: skip
def test_shrunk_model_equals_the_original_with_removed_units_zeroed(kind, granularity) -> None:
    model, where = tiny(kind)
    state = model.state_dict()
    shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
    blocks = [f"{where}.{i}" for i in range(2)]
    config = model.config.to_dict()
    groups = transformer_groups(shapes, blocks, config, granularity)
    keep = 1 if granularity == "head" else 40
    generator = torch.Generator().manual_seed(1)
    kept = {
        g.name: torch.sort(torch.randperm(g.size, generator=generator)[:keep]).values
        for g in groups
    }
    small_state = shrink_tensors(state, groups, kept)
    new_config = shrunk_config(config, granularity, groups[0], keep, shapes)
    extra = {"add_pooling_layer": False} if kind == "bert" else {}
    small = type(model)(type(model.config).from_dict(new_config), **extra)
    small.load_state_dict(small_state, strict=True)

    zeroed = {name: tensor.clone() for name, tensor in state.items()}
    for block, group in zip(blocks, groups, strict=True):
        removed = sorted(set(range(group.size)) - set(kept[group.name].tolist()))
        if granularity == "head":  # a kv group: its 2 query heads' 8 columns each of o_proj
            columns = [c for g in removed for c in range(g * 16, (g + 1) * 16)]
            zeroed[f"{block}.self_attn.o_proj.weight"][:, columns] = 0
        else:
            down, in_out = DOWN[kind]
            weight = zeroed[f"{block}.{down}.weight"]
            if in_out:
                weight[removed, :] = 0
            else:
                weight[:, removed] = 0
    model.load_state_dict(zeroed)
    ids = torch.randint(0, VOCAB, (2, 12), generator=generator)
    expected, got = output(model, ids), output(small, ids)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-5
    if granularity == "head":
        assert new_config["num_attention_heads"] == 2 and new_config["num_key_value_heads"] == 1
        assert new_config["head_dim"] == 8
    assert small.num_parameters() < model.num_parameters()


@pytest.mark.parametrize("kind", ["bert", "gpt2", "opt"])
def test_heads_refused_where_the_config_cannot_say_fewer(kind: str) -> None:
    model, where = tiny(kind)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    with pytest.raises(Unsupported, match="pruned_heads"):
        transformer_groups(shapes, [f"{where}.0"], model.config.to_dict(), "head")
    with pytest.raises(BadInput, match="neuron"):
        transformer_groups(shapes, [f"{where}.0"], model.config.to_dict(), "channel")


def test_uniform_count_by_hand() -> None:
    model, where = tiny("llama")
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    blocks = [f"{where}.{i}" for i in range(2)]
    groups = transformer_groups(shapes, blocks, model.config.to_dict(), "neuron")
    names = block_linears(shapes, blocks)
    # per block: q 32×32, k 16×32, v 16×32, o 32×32, gate/up 64×32, down 32×64 = 9,216; a
    # neuron owns a row of gate and up and a column of down: 96
    assert sum(torch.Size(shapes[n]).numel() for n in names) == 2 * 9216
    assert uniform_keep(groups, shapes, names, 0.25) == (40, 24 * 96 / 9216)
    # multiples of 16: keeping 48 removes 1/6, keeping 32 removes 1/3; 1/4 is as far from
    # both, and the tie removes less
    assert uniform_keep(groups, shapes, names, 0.25, round_to=16)[0] == 48
    assert uniform_keep(groups, shapes, names, 0.26, round_to=16)[0] == 32
    assert uniform_keep(groups, shapes, names, 0.0) == (64, 0.0)
    with pytest.raises(BadInput, match="at most 0.6562"):  # keeping 1 of 64: 63 × 96 / 9,216
        uniform_keep(groups, shapes, names, 0.7)
    with pytest.raises(BadInput, match="round-to 128"):
        uniform_keep(groups, shapes, names, 0.25, round_to=128)
    heads = transformer_groups(shapes, blocks, model.config.to_dict(), "head")
    # a kv group: 16 q rows, 8 k rows, 8 v rows, 16 o columns of 32 = 1,536 of 9,216
    assert uniform_keep(heads, shapes, names, 0.15) == (1, 1536 / 9216)
    with pytest.raises(BadInput, match="every head"):
        uniform_keep(heads, shapes, names, 0.2)


def test_unit_scores_sum_each_units_entries() -> None:
    model, where = tiny("llama")
    state = model.state_dict()
    shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
    (group,) = transformer_groups(shapes, [f"{where}.0"], model.config.to_dict(), "head")
    scores = {piece.tensor: state[piece.tensor].abs() for piece in group.slices}
    got = unit_scores(scores, group)
    attention = f"{where}.0.self_attn"
    for g in range(2):  # kv group g: q rows 16g…, k and v rows 8g…, o columns 16g…
        expected = (
            state[f"{attention}.q_proj.weight"][16 * g : 16 * (g + 1)].abs().sum()
            + state[f"{attention}.k_proj.weight"][8 * g : 8 * (g + 1)].abs().sum()
            + state[f"{attention}.v_proj.weight"][8 * g : 8 * (g + 1)].abs().sum()
            + state[f"{attention}.o_proj.weight"][:, 16 * g : 16 * (g + 1)].abs().sum()
        )
        assert got[g].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_refit_from_the_gram_matrix_is_the_least_squares_fit(bias: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=generator, dtype=torch.float64)
    x[:, 3] = x[:, 5] * 0.5 + 0.1 * x[:, 7]  # correlated inputs: the refit has work to do
    weight = torch.randn(6, 12, generator=generator, dtype=torch.float64)
    b = torch.randn(6, generator=generator, dtype=torch.float64) if bias else None
    y = x @ weight.T + (b if b is not None else 0)
    gram = InputGram(12, bias)
    for rows in x.split(64):
        gram.add(rows)
    kept = torch.tensor([0, 2, 3, 4, 8, 9, 11])
    fitted, fitted_bias = gram.refit(weight, b, kept, damp=0.0)
    design = x[:, kept]
    if bias:
        design = torch.cat([design, torch.ones(200, 1, dtype=torch.float64)], dim=1)
    direct = torch.linalg.lstsq(design, y).solution
    assert torch.allclose(fitted, direct[: len(kept)].T, atol=1e-6)
    if bias:
        assert torch.allclose(fitted_bias, direct[-1], atol=1e-6)
    else:
        assert fitted_bias is None
    residual = design @ direct - y
    naive = x[:, kept] @ weight[:, kept].T + (b if b is not None else 0) - y
    assert residual.norm() < naive.norm()  # better than keeping the old columns
    assert torch.allclose(gram.norms(), x.norm(dim=0))
