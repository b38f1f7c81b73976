"""The block runner against the whole model pruned in memory, block by block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from prunecli.calibration import runner as runner_module
from prunecli.calibration.blocks import Block, find_blocks, linears
from prunecli.calibration.runner import prune_blocks
from prunecli.errors import BadInput, Unsupported
from tests.conftest import files_in, write_llama

transformers = pytest.importorskip("transformers")


class RowMagnitude:
    """Half of each row of every linear layer, the smallest |w| (stable order), and a record
    of what each layer saw: the float64 sum and count of its inputs."""

    def __init__(self) -> None:
        self.seen: dict[str, list[float]] = {}

    def observe(self, name: str, module: torch.nn.Module, inputs: torch.Tensor) -> None:
        total = self.seen.setdefault(name, [0.0, 0])
        total[0] += float(inputs.double().sum())
        total[1] += inputs.shape[0] * inputs.shape[1]

    def prune_block(self, block: Block) -> None:
        for weight in block.weights.values():
            order = weight.abs().sort(dim=1, stable=True).indices[:, : weight.shape[1] // 2]
            weight.scatter_(1, order, 0.0)


def in_memory(folder: Path, ids: torch.Tensor, pruner, batch: int) -> dict[str, torch.Tensor]:
    """The reference: the whole model from ``from_pretrained``, its first block's inputs caught
    by a hook, each block observed, pruned and rerun in turn."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    model.eval()
    model.config.use_cache = False
    layers = model.model.layers
    cache = []

    class Stop(Exception):
        pass

    def grab(_, args, kwargs):
        cache.append((args[0], kwargs))
        raise Stop

    hook = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    for part in ids.split(batch):
        with pytest.raises(Stop), torch.no_grad():
            model(input_ids=part)
    hook.remove()
    for index, layer in enumerate(layers):
        name = f"model.layers.{index}"
        found = linears(layer, name)
        hooks = [
            m.register_forward_hook(lambda m, a, _, n=n: pruner.observe(n, m, a[0]))
            for n, m in found.items()
        ]
        with torch.no_grad():
            for hidden, kwargs in cache:
                layer(hidden, **kwargs)
            for hook in hooks:
                hook.remove()
            pruner.prune_block(Block(index, name, layer, found))
            cache = [(layer(hidden, **kwargs), kwargs) for hidden, kwargs in cache]
    return model.state_dict()


def read_folder(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


@pytest.fixture(scope="module")
def llama3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llama3")
    sizes = {"num_hidden_layers": 3, "hidden_size": 32, "intermediate_size": 64}
    write_llama(folder, max_shard_size="40KB", **sizes)
    return folder


def calibration(samples: int = 6, length: int = 16, vocab: int = 32) -> torch.Tensor:
    return torch.randint(0, vocab, (samples, length), generator=torch.Generator().manual_seed(0))


def test_equals_the_whole_model_pruned_in_memory(llama3: Path, tmp_path: Path) -> None:
    index = json.loads((llama3 / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3
    ids, out = calibration(), tmp_path / "out"
    streamed, memory = RowMagnitude(), RowMagnitude()
    done: list[tuple] = []
    prunable = ["model.layers.0.input_layernorm.weight", "model.layers.1.mlp.up_proj.weight"]
    prune_blocks(
        str(llama3), ids, streamed, str(out), batch_size=4,
        progress=lambda *a: done.append(a), extra={"prunable": prunable},
    )  # fmt: skip
    expected = in_memory(llama3, ids, memory, batch=4)
    got = read_folder(out)
    assert got.keys() == read_folder(llama3).keys()
    for name, tensor in got.items():
        assert torch.equal(tensor, expected[name]), name  # masks and weights, bit for bit
    assert streamed.seen == memory.seen and len(streamed.seen) == 3 * 7
    weight = got["model.layers.2.mlp.down_proj.weight"]
    assert ((weight == 0).sum(dim=1) == weight.shape[1] // 2).all()
    assert (
        json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
        == (index["weight_map"])
    )
    assert {p.name for p in out.iterdir()} == {p.name for p in llama3.iterdir()}
    assert done == [(1, 3, "model.layers.0"), (2, 3, "model.layers.1"), (3, 3, "model.layers.2")]
    zeros = sum(int((got[name] == 0).sum()) for name in prunable)
    achieved = zeros / sum(got[name].numel() for name in prunable)
    assert 0 < achieved < 0.5
    for shard in set(index["weight_map"].values()):  # every header, filled in at the end
        with safe_open(str(out / shard), framework="pt") as handle:
            assert handle.metadata()["prunecli.sparsity.achieved"] == repr(achieved)


def test_one_block_materialised_at_a_time(llama3: Path, tmp_path, monkeypatch) -> None:
    held: list[object] = []
    find = runner_module.find_blocks
    monkeypatch.setattr(runner_module, "find_blocks", lambda *a: held.append(find(*a)) or held[0])
    live: list[list[int]] = []

    class Counting(RowMagnitude):
        def prune_block(self, block: Block) -> None:
            blocks = held[0]
            per_block = [
                sum(p.numel() for p in layer.parameters() if p.device.type != "meta")
                for layer in blocks.layers
            ]
            outside = sum(
                p.numel()
                for n, p in blocks.model.named_parameters()
                if p.device.type != "meta" and not n.startswith("model.layers.")
            )
            live.append([*per_block, outside])
            super().prune_block(block)

    prune_blocks(str(llama3), calibration(), Counting(), str(tmp_path / "out"))
    size = sum(p.numel() for p in held[0].layers[0].parameters())
    assert live == [[size, 0, 0, 0], [0, size, 0, 0], [0, 0, size, 0]]


def test_dtype_kept_zeros_positive_head_copied(tmp_path: Path) -> None:
    source = write_llama(tmp_path / "f32", num_hidden_layers=2)
    model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")

    class NegativeZeros(RowMagnitude):
        def prune_block(self, block: Block) -> None:
            for weight in block.weights.values():
                weight.mul_(-0.0)  # -0.0 wherever w > 0

    prune_blocks(str(tmp_path / "bf16"), calibration(), NegativeZeros(), str(tmp_path / "out"))
    before, after = read_folder(tmp_path / "bf16"), read_folder(tmp_path / "out")
    for name, tensor in after.items():
        assert tensor.dtype == torch.bfloat16, name
        assert not (torch.signbit(tensor) & (tensor == 0)).any(), name
        if "layers" not in name or "norm" in name:
            assert torch.equal(tensor.view(torch.int16), before[name].view(torch.int16)), name
    assert (after["model.layers.1.self_attn.q_proj.weight"] == 0).all()


def test_nan_activations_name_the_block_and_write_nothing(llama3: Path, tmp_path) -> None:
    class Poison(RowMagnitude):
        def prune_block(self, block: Block) -> None:
            if block.index == 1:
                block.weights["model.layers.1.mlp.down_proj"].fill_(float("nan"))

    with pytest.raises(BadInput, match="block model.layers.1 gives NaN"):
        prune_blocks(str(llama3), calibration(), Poison(), str(tmp_path / "out"))
    assert files_in(tmp_path) == set()


def tiny(kind: str):
    """(config, model class, block list, a linear layer inside each block) of a tiny model."""
    t = transformers
    sizes = {"vocab_size": 32}
    if kind == "gpt2":
        config = t.GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=32, **sizes)
        return config, t.GPT2LMHeadModel, "transformer.h", "attn.c_attn"
    if kind == "bert":
        config = t.BertConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
            **sizes,
        )
        return config, t.BertModel, "encoder.layer", "attention.self.query"
    config = t.OPTConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=32,
        max_position_embeddings=32,
        word_embed_proj_dim=16,
        **sizes,
    )
    return config, t.OPTForCausalLM, "model.decoder.layers", "self_attn.q_proj"


@pytest.mark.parametrize("kind", ["gpt2", "bert", "opt"])
def test_other_families_find_their_blocks_and_run(kind: str, tmp_path: Path) -> None:
    config, model_class, prefix, layer = tiny(kind)
    torch.manual_seed(0)
    model_class(config).save_pretrained(tmp_path / kind)
    pruner = RowMagnitude()
    result = prune_blocks(str(tmp_path / kind), calibration(4, 8), pruner, str(tmp_path / "out"))
    assert result["blocks"] == 2
    assert pruner.seen[f"{prefix}.1.{layer}"][1] == 4 * 8
    weights, before = read_folder(tmp_path / "out"), read_folder(tmp_path / kind)
    pruned = weights[f"{prefix}.1.{layer}.weight"]
    rows = pruned.T if kind == "gpt2" else pruned  # GPT-2's Conv1D stores in × out
    assert ((rows == 0).sum(dim=1) == rows.shape[1] // 2).all()
    outside = [n for n in before if not n.startswith(prefix)]
    assert outside and all(torch.equal(weights[n], before[n]) for n in outside)


def test_blocks_not_found_name_what_is_missing() -> None:
    with pytest.raises(Unsupported, match="does not name its block class"):
        find_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)), "model/")

    class Odd(torch.nn.Module):
        _no_split_modules = ["OddLayer"]

        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(Unsupported, match="has no list of OddLayer modules"):
        find_blocks(Odd(), "model/")
