"""What a model computes: multiply-accumulates (MACs) of one forward pass, counted from its graph.

The convention (docs/structured.md, "Cost: parameters and MACs"): MACs of convolutions (any
groups, stride, padding, dilation; 1d/2d/3d, transposed too), matrix products (Linear, ``@``,
``bmm``, ``einsum``) and attention (``scaled_dot_product_attention``, ``MultiheadAttention``:
Q·Kᵀ and A·V) — the operations that dominate every network's cost and that shrinking Conv/Linear
layers and heads reduces. Element-wise operations, activations, normalisation, pooling, softmax
and bias additions count zero. This is what ``torch.utils.flop_counter.FlopCounterMode`` counts
(in FLOPs, two per MAC), and what papers quote as MACs; fvcore adds normalisation and
upsampling, Torch-Pruning's counter (after ptflops) also activations and pooling — a few per cent
on CNNs, nothing on the matrix products.

The count runs one forward pass of batch 1, so it counts the layers the model runs with the
shapes it has now: a physically shrunk model counts less, a model with unstructured zeros counts
the same (dense CPU kernels multiply by zero all the same). Three routes, the first that can:

1. A small module (``REAL_RUN_MAX_PARAMS``, ``REAL_RUN_MAX_INPUT``) runs on a real zero input
   under a ``TorchFunctionMode`` that counts each product by formula (structure/cost_formulas.py),
   if every function it calls is one it knows: no ``torch._dynamo`` import, a tenth of a second.
2. Otherwise ``FlopCounterMode`` counts on the ``meta`` device (shapes only: no memory, no
   arithmetic; its first use imports ``torch._dynamo``, about two seconds).
3. A small module whose forward cannot run on ``meta`` (it reads a value) runs on a real zero
   input under ``FlopCounterMode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from prunecli.structure.cost_formulas import Unseen, count_by_formula

#: token models are counted on a sequence of this many tokens unless told otherwise
DEFAULT_TOKENS = 128
#: the largest module run on a real input when the meta pass fails (a second of CPU at most)
REAL_RUN_MAX_PARAMS = 50_000_000
#: and the largest input it is run on (values: 64 MB of float32)
REAL_RUN_MAX_INPUT = 1 << 24
#: the fast route stops past this many MACs (half a second of one CPU core) for the meta route
REAL_RUN_MAX_MACS = 10_000_000_000


class CostUnknown(Exception):
    """The MACs could not be counted; the message says why (one line)."""


def count_macs(module: nn.Module, example: torch.Tensor) -> int:
    """MACs of ``module(example)`` (``example`` may be on meta): by formula during one real
    forward pass on zeros when the module is small and every product it makes has a formula
    (structure/cost_formulas.py), else on the meta device, else, when the forward cannot run on
    meta, on zeros under ``FlopCounterMode``."""
    small = (
        sum(p.numel() for p in module.parameters()) <= REAL_RUN_MAX_PARAMS
        and example.numel() <= REAL_RUN_MAX_INPUT
    )
    if small:
        try:
            return count_by_formula(module, example, REAL_RUN_MAX_MACS)
        except Unseen:
            pass  # the meta route sees every aten operation
    try:
        return count_on_meta(module, example)
    except CostUnknown:
        raise
    except Exception as meta_error:  # noqa: BLE001 - any op may lack a meta kernel
        if not small:
            raise CostUnknown(_one_line(meta_error)) from None
        try:
            return _on_real(module, example)
        except Exception:  # noqa: BLE001 - the user's module: say why in one line
            raise CostUnknown(_one_line(meta_error)) from None


def example_input(
    module: nn.Module, input_shape: Sequence[int], tokens: bool = False
) -> torch.Tensor:
    """A batch of one on the meta device (no memory, whatever the shape): token ids
    (``tokens``) or values of the module's float dtype."""
    if tokens:
        return torch.zeros((1, *input_shape), dtype=torch.long, device="meta")
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    return torch.zeros((1, *input_shape), dtype=dtype, device="meta")


def token_count(limit: int | None, asked: Sequence[int] | None = None) -> int:
    """The sequence length a token model is counted at: ``asked`` (``--input-shape L``), else
    ``DEFAULT_TOKENS``, or ``limit`` (the longest sequence the model takes) when smaller."""
    if asked:
        if len(asked) != 1:
            raise CostUnknown(
                f"a token model takes a sequence length as its input shape, not {list(asked)}"
            )
        if limit and asked[0] > limit:
            raise CostUnknown(f"the model takes at most {limit} tokens, not {asked[0]}")
        return int(asked[0])
    return min(limit, DEFAULT_TOKENS) if limit else DEFAULT_TOKENS


def count_on_meta(module: nn.Module, example: torch.Tensor) -> int:
    """The meta route: ``FlopCounterMode`` over a forward pass on meta copies of the tensors
    (the reference the fast route is tested against; imports ``torch._dynamo``)."""
    # tied weights (an LM head sharing the embedding) once: functional_call ties them again
    state = {
        **{name: _meta(p) for name, p in module.named_parameters()},
        **{name: _meta(b) for name, b in module.named_buffers()},
    }
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        functional_call(module, state, (example.to("meta"),), strict=False)
    return int(counter.get_total_flops()) // 2


def _on_real(module: nn.Module, example: torch.Tensor) -> int:
    """On a real input, CPU kernels take fused paths FlopCounterMode does not know: formulas
    for them are added (the meta pass decomposes them into products it does know)."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    modes = {layer: layer.training for layer in module.modules()}
    for layer in modes:  # BatchNorm's running statistics must not move; not .eval(), which
        layer.training = False  # a torch.export program's module refuses
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_FUSED) as counter:
            module(torch.zeros_like(example, device=device))
    finally:
        for layer, training in modes.items():
            layer.training = training
    return int(counter.get_total_flops()) // 2


def _meta(tensor: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(tensor, device="meta")


def _sdpa_cpu_flops(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    """``_scaled_dot_product_flash_attention_for_cpu``: Q·Kᵀ and A·V (shapes [B, H, L, E])."""
    batch, heads, length, dim = query
    keys, dim_v = key[-2], value[-1]
    return 2 * batch * heads * length * keys * (dim + dim_v)


def _native_mha_flops(query: Any, key: Any, value: Any, embed: int, heads: int, *args: Any, **kwargs: Any) -> int:  # fmt: skip
    """``_native_multi_head_attention`` (MultiheadAttention's inference fast path): the three
    input projections, Q·Kᵀ and A·V, and the output projection."""
    batch, length = query[0], query[-2]
    keys = key[-2]
    projections = batch * (length * embed * embed + 2 * keys * embed * embed)
    attention = 2 * batch * length * keys * embed
    output = batch * length * embed * embed
    return 2 * (projections + attention + output)


def _fused() -> dict[Any, Any]:
    aten = torch.ops.aten
    table: dict[Any, Any] = {}
    for name, formula in (
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_flops),
        ("_native_multi_head_attention", _native_mha_flops),
    ):
        op = getattr(aten, name, None)
        if op is not None:
            table[op] = formula
    return table


_FUSED = _fused()


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
