"""MACs counted from the graph (structure/cost.py) against hand counts, layer by layer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunecli.models.zoo import build_arch
from prunecli.structure import cost
from prunecli.structure.cost import (
    DEFAULT_TOKENS,
    CostUnknown,
    count_macs,
    example_input,
    token_count,
)


def hook_count(module: nn.Module, example: torch.Tensor) -> int:
    """The independent route: a real forward pass, each Conv/Linear's output shape caught by a
    hook and multiplied by the MACs of one output value (in/groups · kernel, or in_features)."""
    total = 0

    def conv(layer: nn.Conv1d | nn.Conv2d, _: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * layer.in_channels // layer.groups * math.prod(layer.kernel_size)

    def linear(layer: nn.Linear, _: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * layer.in_features

    handles = []
    for layer in module.modules():
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            handles.append(layer.register_forward_hook(conv))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(linear))
    with torch.no_grad():
        module(example)
    for handle in handles:
        handle.remove()
    return total


def test_conv2d_with_stride_padding_groups_and_dilation() -> None:
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=4)
    # output: floor((11 + 4 - 2·2 - 1) / 2) + 1 = 6 per side; each value: 8/4 · 3 · 3 MACs
    assert count_macs(conv, torch.zeros(1, 8, 11, 11)) == 12 * 6 * 6 * 2 * 9


def test_conv1d_and_linear_on_a_sequence() -> None:
    conv = nn.Conv1d(4, 6, 5, padding=1, bias=False)
    assert count_macs(conv, torch.zeros(1, 4, 20)) == 6 * 18 * 4 * 5
    linear = nn.Linear(8, 3)  # on 5 positions: 5 · 8 · 3; the bias adds no MAC
    assert count_macs(linear, torch.zeros(1, 5, 8)) == 5 * 8 * 3


@pytest.mark.parametrize(("arch", "shape"), [("lenet5", (1, 28, 28)), ("conv2", (3, 32, 32))])
def test_zoo_models_match_the_per_layer_formula(arch: str, shape: tuple[int, ...]) -> None:
    module = build_arch(arch).module.eval()
    example = torch.randn(1, *shape)
    counted = count_macs(module, example)
    assert counted == hook_count(module, example) > 0
    if (
        arch == "lenet5"
    ):  # by hand: conv1 6·28·28·25, conv2 16·10·10·150, then 400·120 + 120·84 + 84·10
        assert counted == 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10


def test_a_large_input_allocates_nothing() -> None:
    linear = nn.Linear(64, 8)
    example = example_input(linear, (1 << 24, 64))  # 4 GiB of float32, were it real
    assert example.device.type == "meta"
    assert count_macs(linear, example) == (1 << 24) * 64 * 8


def test_zeros_keep_the_count_and_narrower_layers_lower_it() -> None:
    wide = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 4))
    example = torch.zeros(1, 10)
    dense = count_macs(wide, example)
    with torch.no_grad():
        wide[0].weight[:, ::2] = 0  # unstructured zeros: the kernels still multiply them
    assert count_macs(wide, example) == dense == 10 * 20 + 20 * 4
    narrow = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 4))
    assert count_macs(narrow, example) == 10 * 10 + 10 * 4


class Attention(nn.Module):
    """Multi-head attention by hand (projections + scaled_dot_product_attention) beside
    nn.MultiheadAttention; ``check`` reads a value, which the meta device cannot."""

    def __init__(self, dim: int = 16, heads: int = 2, check: bool = False) -> None:
        super().__init__()
        self.qkv, self.out, self.heads, self.check = (
            nn.Linear(dim, 3 * dim),
            nn.Linear(dim, dim),
            heads,
            check,
        )
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.check and not bool(torch.isfinite(x).all()):
            raise ValueError("non-finite input")
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        return self.out(y) + self.mha(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("check", [False, True], ids=["meta", "real-fallback"])
def test_attention_counts_projections_and_both_products(check: bool) -> None:
    module = Attention(check=check).eval()
    n, d = 6, 16
    one = n * d * 3 * d + 2 * n * n * d + n * d * d  # qkv, Q·Kᵀ and A·V over all heads, out
    # the real run takes CPU kernels' fused paths (flash attention, MHA's fast path): counted too
    assert count_macs(module, torch.zeros(1, n, d)) == 2 * one


@pytest.mark.parametrize("fast", [True, False], ids=["by-formula", "flop-counter"])
def test_the_real_run_leaves_the_module_as_it_was(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not fast:  # the fast route stops at once: the meta route fails, FlopCounterMode on zeros
        monkeypatch.setattr(cost, "REAL_RUN_MAX_MACS", 0)

    class Reads(nn.Module):  # reads a value: counted on a real input, in eval mode
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) * float(x.abs().max() >= 0)

    module = Reads().train()
    assert count_macs(module, torch.ones(1, 2, 4, 4)) == 3 * 16 * 2
    assert module.training and module.bn.training
    assert int(module.bn.num_batches_tracked) == 0 and module.bn.running_mean.abs().sum() == 0


def test_a_forward_that_fails_everywhere_says_why() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("no forward here")

    with pytest.raises(CostUnknown, match="no forward here"):
        count_macs(Broken(), torch.zeros(1, 3))


def test_token_count() -> None:
    assert token_count(512) == token_count(None) == DEFAULT_TOKENS == 128
    assert token_count(32) == 32
    assert token_count(32, (20,)) == token_count(None, (20,)) == 20
    with pytest.raises(CostUnknown, match="at most 32 tokens"):
        token_count(32, (40,))  # the meta pass would not notice: positions are not checked
    with pytest.raises(CostUnknown):
        token_count(None, (3, 4))


def _transformer_macs(length: int, hidden: int, inter: int, heads: int, kv: int, layers: int, gated: bool) -> int:  # fmt: skip
    """Per layer: q and o projections, k and v (kv heads), the FFN (3 matrices when gated),
    and Q·Kᵀ plus A·V over every query head."""
    head = hidden // heads
    projections = length * (2 * hidden * hidden + 2 * hidden * kv * head)
    ffn = length * (3 if gated else 2) * hidden * inter
    attention = 2 * heads * length * length * head
    return layers * (projections + ffn + attention)


def test_tiny_llama_with_grouped_query_attention() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).eval()
    length = 12
    expected = _transformer_macs(length, 16, 24, 4, 2, 2, gated=True) + length * 16 * 40  # lm_head
    ids = example_input(model, (length,), tokens=True)
    assert ids.dtype == torch.long
    assert count_macs(model, ids) == expected


def test_tiny_bert_encoder() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64,
    )  # fmt: skip
    model = transformers.BertModel(config).eval()
    length = 10
    expected = (
        _transformer_macs(length, 16, 32, 4, 4, 2, gated=False) + 16 * 16
    )  # the pooler: one token
    assert count_macs(model, example_input(model, (length,), tokens=True)) == expected


def test_tiny_gpt2_with_a_tied_head() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=4, n_positions=32, vocab_size=40)
    model = transformers.GPT2LMHeadModel(config).eval()
    assert model.lm_head.weight is model.transformer.wte.weight
    length, h = 8, 16  # per layer: c_attn 3h², c_proj h², the MLP 4h² twice; Q·Kᵀ and A·V
    expected = 2 * (length * 12 * h * h + 2 * length * length * h) + length * h * 40
    assert count_macs(model, example_input(model, (length,), tokens=True)) == expected
