"""`prunecli prune FOLDER --method wanda|sparsegpt --data ids.npz` through the CLI on a tiny
folder of each architecture family the block runner takes (Llama, Mistral, Qwen2, GPT-2, OPT,
BERT), built here with transformers' configs: the output loads with ``from_pretrained`` and
runs, each linear layer inside the blocks (found here from the loaded transformers model) holds
the pruned count, and every other tensor keeps its bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")

VOCAB, LAYERS = 64, 2
WINDOWS = ("--samples", 4, "--seq-len", 16)


def build(kind: str):  # noqa: ANN201
    """(config, model class, where its blocks sit) of a tiny ``kind``: width 32, 2 blocks."""
    t = transformers
    decoder = {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    }
    if kind == "llama":
        return t.LlamaConfig(**decoder), t.AutoModelForCausalLM, "model.layers"
    if kind == "mistral":  # a window shorter than --seq-len: the sliding mask is exercised
        return t.MistralConfig(sliding_window=8, **decoder), t.AutoModelForCausalLM, "model.layers"
    if kind == "qwen2":  # biased q/k/v, and max_window_layers (28) above its 2 layers
        return t.Qwen2Config(**decoder), t.AutoModelForCausalLM, "model.layers"
    if kind == "gpt2":  # Conv1D layers, storing their weights in × out
        config = t.GPT2Config(
            n_layer=LAYERS, n_embd=32, n_head=4, n_positions=64, vocab_size=VOCAB,
            bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
        return config, t.AutoModelForCausalLM, "transformer.h"
    if kind == "opt":
        config = t.OPTConfig(
            vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=LAYERS,
            num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32,
        )  # fmt: skip
        return config, t.AutoModelForCausalLM, "model.decoder.layers"
    config = t.BertConfig(  # a masked-LM head: a linear layer outside the blocks
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
        num_attention_heads=4, max_position_embeddings=64,
    )  # fmt: skip
    return config, t.AutoModelForMaskedLM, "bert.encoder.layer"


KINDS = ["llama", "mistral", "qwen2", "gpt2", "opt", "bert"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """``folder(kind)``: the tiny model of ``kind`` saved with ``save_pretrained`` (once)."""
    root = tmp_path_factory.mktemp("archs")
    ids = np.random.default_rng(0).integers(0, VOCAB, (8, 32))
    np.savez(root / "ids.npz", input_ids=ids)
    made: dict[str, Path] = {}

    def folder(kind: str) -> Path:
        if kind not in made:
            config, auto, _ = build(kind)
            torch.manual_seed(0)
            auto.from_config(config).save_pretrained(root / kind)
            made[kind] = root / kind
        return made[kind]

    return folder


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        found.update(load_file(str(file)))
    return found


def block_linears(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """Every linear layer inside the blocks of the loaded ``model``, its weight as out × in."""
    found = {}
    for name, module in model.named_modules():
        if not name.startswith(prefix + "."):
            continue
        if isinstance(module, torch.nn.Linear):
            found[f"{name}.weight"] = module.weight.detach()
        elif isinstance(module, transformers.pytorch_utils.Conv1D):
            found[f"{name}.weight"] = module.weight.detach().T  # stored in × out
    return found


CASES = [(kind, "wanda") for kind in KINDS] + [("qwen2", "sparsegpt"), ("gpt2", "sparsegpt")]


@pytest.mark.parametrize(("kind", "method"), CASES, ids=[f"{k}-{m}" for k, m in CASES])
def test_prunes_each_family_through_the_cli(cli, folders, tmp_path, kind, method) -> None:
    source, out = folders(kind), tmp_path / "out"
    goal = ("--sparsity", "0.5") if method == "wanda" else ("--pattern", "2:4")
    data = source.parent / "ids.npz"
    result = cli("prune", source, "--method", method, *goal, "--data", data, *WINDOWS, "-o", out)
    assert result.exit_code == 0, result.stderr
    _, auto, prefix = build(kind)
    model = auto.from_pretrained(out)
    model.eval()
    with torch.no_grad():
        output = model(input_ids=torch.arange(16).reshape(2, 8) % VOCAB)
    assert torch.isfinite(output.logits).all()
    pruned = block_linears(model, prefix)
    assert len(pruned) == LAYERS * {"gpt2": 4, "opt": 6, "bert": 6}.get(kind, 7)
    for name, weight in pruned.items():
        rows, columns = weight.shape
        if method == "wanda":  # exactly half of every output row
            assert ((weight == 0).sum(dim=1) == columns // 2).all(), name
        else:  # at most 2 of every 4 consecutive inputs kept, half the layer pruned
            groups = (weight != 0).reshape(rows, columns // 4, 4).sum(dim=2)
            assert (groups <= 2).all(), name
            assert int((weight == 0).sum()) >= weight.numel() // 2, name
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()["prunecli.prunable"]) == list(pruned)
    before, after = tensors(source), tensors(out)
    assert after.keys() == before.keys()
    dense = [name for name in before if name not in pruned]
    assert any("embed" in name or "wte" in name for name in dense)
    for name in dense:  # embeddings, norms, biases, the head: the same bytes
        assert before[name].dtype == after[name].dtype, name
        assert torch.equal(before[name].view(torch.uint8), after[name].view(torch.uint8)), name
    for name in pruned:
        assert not torch.equal(before[name], after[name]), name
