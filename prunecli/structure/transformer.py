"""A transformer's FFN neurons and attention heads as groups (structure/groups.py), found from
tensor names and shapes alone, and the config.json that describes the model once they are cut.

Per block, one group: with ``neuron``, the FFN's hidden units (a row of ``up``/``gate`` and its
bias, a column of ``down``); with ``head``, the attention's key/value groups (under grouped-query
attention a kv head with the ``heads / kv_heads`` query heads that read it: their q rows, its k
and v rows, their o columns). A config.json holds one width per kind, so every block keeps the
same number of units (structure/units.py ``uniform_keep``).

Heads are cut only where the config can say so: Llama, Mistral and Qwen2 read ``head_dim`` from
it. BERT, GPT-2 and OPT derive the head size from ``hidden_size / num_attention_heads``, and
transformers 5 no longer reads BERT's ``pruned_heads`` (the attribute is kept, the layers are
built whole), so fewer heads cannot be described: refused.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prunecli.errors import BadInput, Unsupported
from prunecli.structure.groups import Group, Slice


@dataclass(frozen=True)
class FFNSpec:
    """Where an FFN's layers sit in a block: ``producers`` write the hidden units, ``consumer``
    reads them; ``in_out``: the weights are stored in × out (GPT-2's ``Conv1D``)."""

    family: str
    producers: tuple[str, ...]
    consumer: str
    config_key: str
    in_out: bool = False


FFN_SPECS = (
    FFNSpec("llama", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj", "intermediate_size"),
    FFNSpec("bert", ("intermediate.dense",), "output.dense", "intermediate_size"),
    FFNSpec("gpt2", ("mlp.c_fc",), "mlp.c_proj", "n_inner", in_out=True),
    FFNSpec("opt", ("fc1",), "fc2", "ffn_dim"),
)
ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
#: model types whose attention reads head_dim, num_attention_heads and num_key_value_heads
HEAD_TYPES = ("llama", "mistral", "qwen2", "qwen3")
GRANULARITIES = ("neuron", "head")


def transformer_groups(
    shapes: Mapping[str, tuple[int, ...]],
    blocks: Sequence[str],
    config: Mapping[str, Any],
    granularity: str,
) -> list[Group]:
    """One group per block (``blocks``: their name prefixes, ``model.layers.0``…), every slice
    checked against ``shapes``; Unsupported when the blocks are not of a kind known here."""
    if granularity not in GRANULARITIES:
        raise BadInput(
            f"--granularity {granularity} does not apply to a Hugging Face folder",
            "use --granularity neuron (FFN neurons) or head (attention heads)",
        )
    model_type = str(config.get("model_type") or "unknown")
    build = _ffn_group if granularity == "neuron" else _head_group
    groups = [build(shapes, prefix, config, model_type) for prefix in blocks]
    if len({group.size for group in groups}) > 1:
        raise Unsupported(
            f"the blocks of this {model_type} model differ in width "
            f"({sorted({g.size for g in groups})}); config.json can hold only one",
        )
    for group in groups:
        group.check(shapes)
    return groups


def ffn_spec(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> FFNSpec | None:
    """The FFN layout of the block ``prefix``, or None."""
    for spec in FFN_SPECS:
        if all(f"{prefix}.{m}.weight" in shapes for m in (*spec.producers, spec.consumer)):
            return spec
    return None


def _ffn_group(
    shapes: Mapping[str, tuple[int, ...]], prefix: str, config: Mapping[str, Any], model_type: str
) -> Group:
    spec = ffn_spec(shapes, prefix)
    if spec is None:
        raise Unsupported(
            f"--granularity neuron: the blocks of this {model_type} model hold no FFN known here",
            "neurons are removed from Llama, Mistral, Qwen2, BERT, GPT-2 and OPT-like models",
        )
    out_dim, in_dim = (1, 0) if spec.in_out else (0, 1)
    slices = []
    for producer in spec.producers:
        slices.append(Slice(f"{prefix}.{producer}.weight", out_dim))
        if f"{prefix}.{producer}.bias" in shapes:
            slices.append(Slice(f"{prefix}.{producer}.bias", 0))
    consumer = f"{prefix}.{spec.consumer}"
    slices.append(Slice(f"{consumer}.weight", in_dim))
    size = shapes[f"{consumer}.weight"][in_dim]
    return Group(
        name=f"{prefix}.ffn",
        kind="neuron",
        size=size,
        slices=slices,
        consumers=[consumer],
        producers=[f"{prefix}.{p}" for p in spec.producers],
        label=f"{prefix} FFN",
    )


def head_layout(config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], prefix: str):  # noqa: ANN201
    """(heads, kv heads, head_dim) of the attention in block ``prefix``."""
    heads = int(config["num_attention_heads"])
    q_rows = shapes[f"{prefix}.{ATTENTION[0]}.weight"][0]
    k_rows = shapes[f"{prefix}.{ATTENTION[1]}.weight"][0]
    head_dim = config.get("head_dim") or q_rows // heads
    return heads, k_rows // head_dim, int(head_dim)


def _head_group(
    shapes: Mapping[str, tuple[int, ...]], prefix: str, config: Mapping[str, Any], model_type: str
) -> Group:
    has_attention = all(f"{prefix}.{m}.weight" in shapes for m in ATTENTION)
    if model_type not in HEAD_TYPES or not has_attention:
        derived = model_type in ("bert", "roberta", "gpt2", "opt", "distilbert")
        raise Unsupported(
            f"--granularity head: {model_type} models are not cut by heads here"
            + (
                ": their config derives the head size from hidden_size / num_attention_heads "
                "and transformers 5 ignores pruned_heads, so no config.json describes fewer heads"
                if derived
                else " (attention heads are removed from Llama, Mistral and Qwen2 models)"
            ),
            "use --granularity neuron to remove FFN neurons",
        )
    heads, kv_heads, head_dim = head_layout(config, shapes, prefix)
    if heads % kv_heads or heads * head_dim != shapes[f"{prefix}.{ATTENTION[0]}.weight"][0]:
        raise Unsupported(
            f"{prefix}: {heads} heads of {head_dim} over {kv_heads} key/value heads do not match "
            "the q/k/v shapes"
        )
    q_block = heads // kv_heads * head_dim
    slices = []
    for module, block in zip(ATTENTION[:3], (q_block, head_dim, head_dim), strict=True):
        slices.append(Slice(f"{prefix}.{module}.weight", 0, block))
        if f"{prefix}.{module}.bias" in shapes:
            slices.append(Slice(f"{prefix}.{module}.bias", 0, block))
    consumer = f"{prefix}.{ATTENTION[3]}"
    slices.append(Slice(f"{consumer}.weight", 1, q_block))
    unit = "heads" if heads == kv_heads else "key/value groups"
    return Group(
        name=f"{prefix}.self_attn",
        kind="head",
        size=kv_heads,
        slices=slices,
        consumers=[consumer],
        producers=[f"{prefix}.{m}" for m in ATTENTION[:3]],
        label=f"{prefix} attention ({unit})",
    )


def shrunk_config(
    config: Mapping[str, Any],
    granularity: str,
    group: Group,
    keep: int,
    shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, Any]:
    """config.json for blocks that each keep ``keep`` units of ``group``'s kind (``group``: the
    first block's, as found in the input's ``shapes``)."""
    new = copy.deepcopy(dict(config))
    prefix = group.name.rpartition(".")[0]
    if granularity == "neuron":
        spec = ffn_spec(shapes, prefix)
        assert spec is not None
        new[spec.config_key] = keep
        return new
    heads, kv_heads, head_dim = head_layout(config, shapes, prefix)
    new["num_attention_heads"] = keep * (heads // kv_heads)
    new["num_key_value_heads"] = keep
    new["head_dim"] = head_dim  # no longer hidden_size / heads: say it
    return new


def block_linears(shapes: Mapping[str, tuple[int, ...]], blocks: Sequence[str]) -> list[str]:
    """The blocks' linear-layer parameters (2-D weights and their biases), in ``shapes``'
    order: what ``--sparsity`` is a fraction of."""
    inside = tuple(f"{prefix}." for prefix in blocks)
    weights = {
        name.removesuffix(".weight")
        for name, shape in shapes.items()
        if name.startswith(inside) and name.endswith(".weight") and len(shape) == 2
    }
    return [
        name
        for name in shapes
        if name.rpartition(".")[0] in weights and name.endswith((".weight", ".bias"))
    ]
