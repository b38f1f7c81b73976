"""`prunecli prune ./folder/ --granularity neuron|head` as a user runs it: the smaller folder loads
with plain ``from_pretrained``, its config says the new widths, and it computes what the original
computes with the removed units zeroed — the units chosen here by hand (magnitude: the units'
L1 norms; wanda: activation norms from hooks on the dense model); with --data the refit layer
is closer to the dense one than without; bad requests are refused with no output left."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import report_of, run_refused

transformers = pytest.importorskip("transformers")
t = transformers
VOCAB = 32
DECODER = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


def save(folder: Path, model: torch.nn.Module) -> Path:
    model.save_pretrained(folder)
    return folder


def llama(folder: Path, layers: int = 2) -> Path:
    torch.manual_seed(0)
    config = t.LlamaConfig(num_hidden_layers=layers, **DECODER)
    return save(folder, t.LlamaForCausalLM(config))


def bert(folder: Path) -> Path:
    torch.manual_seed(0)
    config = t.BertConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64,
    )  # fmt: skip
    return save(folder, t.BertForMaskedLM(config))


def ids_file(folder: Path, tokens: int) -> Path:
    ids = np.random.default_rng(0).integers(0, VOCAB, (1, tokens))
    np.savez(folder / "ids.npz", input_ids=ids)
    return folder / "ids.npz"


def logits(folder: Path, auto=t.AutoModelForCausalLM, state=None) -> torch.Tensor:  # noqa: ANN001
    model = auto.from_pretrained(str(folder))
    if state is not None:
        model.load_state_dict(state)
    model.eval()
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model(input_ids=ids).logits


def dense_state(folder: Path, auto=t.AutoModelForCausalLM) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return {k: v.clone() for k, v in auto.from_pretrained(str(folder)).state_dict().items()}


def lowest(scores: torch.Tensor, keep: int) -> list[int]:
    """The units removed: all but the ``keep`` highest."""
    return sorted(torch.argsort(scores, descending=True, stable=True)[keep:].tolist())


def test_llama_neurons_by_magnitude(cli, workdir: Path) -> None:
    source = llama(workdir / "llama")
    result = cli("prune", source, "-m", "magnitude", "--granularity", "neuron", "-s", "0.25",
                 "-o", "slim", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    config = json.loads((workdir / "slim" / "config.json").read_text())
    # a neuron owns 96 of a block's 9,216 linear parameters: 0.25 is 24 neurons
    assert config["intermediate_size"] == 40 and config["num_attention_heads"] == 4
    assert report["pruning"]["achieved_sparsity"] == pytest.approx(24 * 96 / 9216)
    assert report["pruning"]["granularity"] == "neuron"
    structure = report["structure"]
    assert [(g["before"], g["after"]) for g in structure["groups"]] == [(64, 40)] * 2
    assert structure["removed_params"] == 2 * 24 * 96 and structure["reconstructed"] == []
    assert report["cost"]["params_ratio"] < 1

    state = dense_state(source)
    for block in range(2):
        mlp = f"model.layers.{block}.mlp"
        l1 = (
            state[f"{mlp}.gate_proj.weight"].abs().sum(1)
            + state[f"{mlp}.up_proj.weight"].abs().sum(1)
            + state[f"{mlp}.down_proj.weight"].abs().sum(0)
        )
        state[f"{mlp}.down_proj.weight"][:, lowest(l1, 40)] = 0
    expected = logits(source, state=state)
    got = logits(workdir / "slim")
    assert (got - expected).abs().max() < 1e-5


def test_llama_kv_groups_by_magnitude(cli, workdir: Path) -> None:
    source = llama(workdir / "llama")
    result = cli("prune", source, "-m", "magnitude", "--granularity", "head", "-s", "0.15",
                 "-o", "slim", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    config = json.loads((workdir / "slim" / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (2, 1)
    assert config["head_dim"] == 8 and config["hidden_size"] == 32
    assert report_of(result)["pruning"]["achieved_sparsity"] == pytest.approx(1536 / 9216)
    state = dense_state(source)
    for block in range(2):
        attn = f"model.layers.{block}.self_attn"
        l1 = torch.stack(
            [
                state[f"{attn}.q_proj.weight"][16 * g : 16 * g + 16].abs().sum()
                + state[f"{attn}.k_proj.weight"][8 * g : 8 * g + 8].abs().sum()
                + state[f"{attn}.v_proj.weight"][8 * g : 8 * g + 8].abs().sum()
                + state[f"{attn}.o_proj.weight"][:, 16 * g : 16 * g + 16].abs().sum()
                for g in range(2)
            ]
        )
        (gone,) = lowest(l1, 1)
        state[f"{attn}.o_proj.weight"][:, 16 * gone : 16 * gone + 16] = 0
    assert (logits(workdir / "slim") - logits(source, state=state)).abs().max() < 1e-5


def test_bert_neurons_load_with_automodel(cli, workdir: Path) -> None:
    source = bert(workdir / "bert")
    result = cli("prune", source, "-m", "magnitude", "--granularity", "neuron", "-s", "0.3",
                 "--round-to", "8", "-o", "slim", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    # per block: 4 × 32×32 + 2 × 64×32 (+ biases 4 × 32 + 64 + 32) = 8,416; a neuron (a row,
    # its bias, a column): 65. Multiples of 8: keeping 24 removes 40 × 65 / 8,416 = 0.309,
    # keeping 32 removes 0.247
    config = json.loads((workdir / "slim" / "config.json").read_text())
    assert config["intermediate_size"] == 24 and config["num_attention_heads"] == 4
    slim = t.AutoModel.from_pretrained(str(workdir / "slim"))
    assert slim.encoder.layer[1].intermediate.dense.weight.shape == (24, 32)
    auto = t.AutoModelForMaskedLM
    state = dense_state(source, auto)
    for block in range(2):
        layer = f"bert.encoder.layer.{block}"
        l1 = (
            state[f"{layer}.intermediate.dense.weight"].abs().sum(1)
            + state[f"{layer}.intermediate.dense.bias"].abs()
            + state[f"{layer}.output.dense.weight"].abs().sum(0)
        )
        state[f"{layer}.output.dense.weight"][:, lowest(l1, 24)] = 0
    assert (logits(workdir / "slim", auto) - logits(source, auto, state)).abs().max() < 1e-5


def test_random_is_seeded_and_differs_between_blocks(cli, workdir: Path) -> None:
    source = llama(workdir / "llama")
    flags = ("-m", "random", "--granularity", "neuron", "-s", "0.25", "-q")
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert cli("prune", source, *flags, "--seed", seed, "-o", name).exit_code == 0
    read = {n: (workdir / n / "model.safetensors").read_bytes() for n in "abc"}
    assert read["a"] == read["b"] and read["a"] != read["c"]
    state = dense_state(source)
    slim = dense_state(workdir / "a")

    def kept(block: int) -> list[int]:  # the rows of up_proj that stayed, found by value
        rows = state[f"model.layers.{block}.mlp.up_proj.weight"]
        left = slim[f"model.layers.{block}.mlp.up_proj.weight"]
        return [int((rows == row).all(dim=1).nonzero()) for row in left]

    assert len(kept(0)) == 40 and kept(0) != kept(1)


def dense_inputs(folder: Path, ids: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The input and output of ``layer`` in the dense model on ``ids`` (hooks)."""
    model = t.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    seen = {}
    module = model.get_submodule(layer)
    hook = module.register_forward_hook(lambda m, a, o: seen.update(x=a[0][0], y=o[0]))
    with torch.no_grad():
        model(input_ids=ids)
    hook.remove()
    return seen["x"], seen["y"]


@pytest.mark.parametrize("granularity", ["neuron", "head"])
def test_wanda_scores_are_activation_norms_times_column_norms(cli, workdir, granularity) -> None:
    source = llama(workdir / "llama", layers=1)
    ids = ids_file(workdir, 16)  # one window of 16 tokens: exactly the file
    sparsity = "0.25" if granularity == "neuron" else "0.15"
    result = cli("prune", source, "-m", "wanda", "--granularity", granularity, "-s", sparsity,
                 "--data", ids, "--samples", 1, "--seq-len", 16, "--no-reconstruct",
                 "-o", "slim", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert report_of(result)["structure"]["reconstructed"] == []
    tokens = torch.from_numpy(np.load(ids)["input_ids"])
    state = dense_state(source)
    if granularity == "neuron":
        x, _ = dense_inputs(source, tokens, "model.layers.0.mlp.down_proj")
        weight = state["model.layers.0.mlp.down_proj.weight"]
        scores = x.norm(dim=0) * weight.norm(dim=0)
        weight[:, lowest(scores, 40)] = 0
    else:
        x, _ = dense_inputs(source, tokens, "model.layers.0.self_attn.o_proj")
        weight = state["model.layers.0.self_attn.o_proj.weight"]
        columns = x.norm(dim=0) * weight.norm(dim=0)
        (gone,) = lowest(columns.reshape(2, 16).sum(1), 1)
        weight[:, 16 * gone : 16 * gone + 16] = 0
    assert (logits(workdir / "slim") - logits(source, state=state)).abs().max() < 1e-5


def test_reconstruction_brings_the_refit_layer_closer_to_dense(cli, workdir: Path) -> None:
    source = llama(workdir / "llama", layers=1)
    ids = ids_file(workdir, 64)
    flags = ("-m", "wanda", "--granularity", "neuron", "-s", "0.33", "--data", ids,
             "--samples", 1, "--seq-len", 64, "-q")  # fmt: skip
    assert cli("prune", source, *flags, "-o", "refit").exit_code == 0
    assert cli("prune", source, *flags, "--no-reconstruct", "-o", "plain").exit_code == 0
    tokens = torch.from_numpy(np.load(ids)["input_ids"])
    layer = "model.layers.0.mlp.down_proj"
    _, dense = dense_inputs(source, tokens, layer)
    errors = {}
    for name in ("refit", "plain"):
        _, got = dense_inputs(workdir / name, tokens, layer)
        errors[name] = float((got - dense).norm() / dense.norm())
    assert errors["refit"] < 0.8 * errors["plain"], errors
    metadata = (workdir / "refit" / "model.safetensors").read_bytes()[:4096]
    assert b'"prunecli.granularity":"neuron"' in metadata


@pytest.fixture
def folders(workdir: Path) -> dict[str, Path]:
    ids_file(workdir, 64)
    return {"llama": llama(workdir / "llama"), "bert": bert(workdir / "bert")}


@pytest.mark.parametrize(
    ("model", "flags", "code", "says"),
    [
        ("bert", ("-m", "magnitude", "--granularity", "head", "-s", "0.1"), 3, "pruned_heads"),
        ("llama", ("-m", "magnitude", "--granularity", "neuron", "-s", "0.1", "--round-to", 128),
         2, "--round-to 128"),
        ("llama", ("-m", "magnitude", "--granularity", "neuron", "-s", "0.7"), 2, "at most 0.6562"),
        ("llama", ("-m", "magnitude", "--granularity", "channel", "-s", "0.1"), 2, "neuron"),
        ("llama", ("-m", "snip", "--granularity", "neuron", "-s", "0.1", "--data", "ids.npz"),
         3, "--method snip"),
        ("llama", ("-m", "sparsegpt", "--granularity", "neuron", "-s", "0.1", "--data",
                   "ids.npz"), 3, "--method sparsegpt"),
        ("llama", ("-m", "magnitude", "--granularity", "neuron", "-s", "0.1", "--scope", "erk"),
         2, "--scope erk"),
    ],
)  # fmt: skip
def test_refused(cli, workdir, folders, model, flags, code, says) -> None:
    run_refused(cli, workdir, ("prune", folders[model], *flags, "-o", "out"), code, says)


def test_dry_run_says_the_units_and_config_and_writes_nothing(cli, workdir, folders) -> None:
    before = sorted(p.name for p in workdir.iterdir())
    result = cli("prune", folders["llama"], "-m", "wanda", "--granularity", "head", "-s", "0.15",
                 "--data", "ids.npz", "--dry-run", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    structure = json.loads(result.stdout)["structure"]
    assert structure["config"] == {"num_attention_heads": 2, "num_key_value_heads": 1}
    assert structure["reconstructed"] == [f"model.layers.{i}.self_attn.o_proj" for i in (0, 1)]
    assert sorted(p.name for p in workdir.iterdir()) == before
