"""Hugging Face folders: tiny configs built locally (never downloaded), sharded with save_pretrained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import report_of, write_llama, write_weights
from safetensors import safe_open
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers")

from prunecli.jobs.session import open_model  # noqa: E402


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "llama-like"
    write_llama(
        folder,
        "50KB",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=128,
        max_position_embeddings=2048,
    )
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    return folder


@pytest.fixture
def model_dir(llama: Path, workdir: Path) -> Path:
    return Path(shutil.copytree(llama, workdir / "llama-like"))


def test_pruned_folder_loads_with_from_pretrained(cli, model_dir: Path, workdir: Path) -> None:
    shards = sorted(p.name for p in model_dir.glob("*.safetensors"))
    assert len(shards) > 1
    result = cli("prune", model_dir, "-m", "magnitude", "-s", "0.5", "-o", "llama-50", "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["model"]["hf_architecture"] == "LlamaForCausalLM"
    names = [layer["name"] for layer in report["layers"]]
    assert not any("embed" in n or "norm" in n or n.startswith("lm_head") for n in names)
    out = workdir / "llama-50"
    for companion in ("config.json", "generation_config.json", "tokenizer_config.json"):
        assert (out / companion).read_bytes() == (model_dir / companion).read_bytes()
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards
    with safe_open(str(out / shards[0]), "pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "pt" and float(meta["prunecli.sparsity.achieved"]) == 0.5
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    original = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    params = dict(loaded.named_parameters())
    zeros = sum(int((params[n] == 0).sum()) for n in names)
    assert zeros == round(0.5 * sum(params[n].numel() for n in names))
    assert torch.equal(loaded.lm_head.weight, original.lm_head.weight)
    ids = torch.tensor([[1, 2, 3]])
    assert loaded(ids).logits.shape == (1, 3, 128)


def test_dry_run_shows_dense_head_embeddings_and_norms(cli, model_dir: Path) -> None:
    result = cli("prune", model_dir, "-m", "magnitude", "-s", "0.5", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    dense = {t["name"] for t in plan["dense"]}
    assert {"lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"} <= dense
    assert len(plan["prunable"]) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert not Path("llama-like.pruned").exists()


def test_open_model_builds_the_module_from_config(model_dir: Path) -> None:
    model, names = open_model(str(model_dir))
    assert type(model.module).__name__ == "LlamaForCausalLM"
    first = names[0]
    assert model.module.get_parameter(first).data_ptr() == model.tensors[first].data_ptr()


def test_in_memory_route_writes_a_loadable_folder(cli, model_dir: Path, workdir: Path) -> None:
    """Two rounds take the in-memory path (the module is built); the folder still loads."""
    args = ("prune", model_dir, "-m", "magnitude", "-s", "0.6", "--iterations", "2", "-o", "it")
    assert cli(*args).exit_code == 0
    loaded = transformers.AutoModelForCausalLM.from_pretrained(workdir / "it")
    weight = loaded.model.layers[0].mlp.up_proj.weight
    assert 0 < float((weight == 0).float().mean()) < 1


def test_input_shape_criteria_refuse_token_models(cli, model_dir: Path) -> None:
    result = cli("prune", model_dir, "-m", "synflow", "-s", "0.5")
    assert result.exit_code == 3, result.stderr
    assert "token ids" in result.stderr


def test_config_transformers_cannot_build(cli, model_dir: Path, workdir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    config["model_type"] = "no-such-model"
    (model_dir / "config.json").write_text(json.dumps(config))
    result = cli("prune", model_dir, "-m", "synflow", "-s", "0.5", "-o", "out")
    assert result.exit_code == 2, result.stderr
    assert "transformers cannot build" in result.stderr
    assert not (workdir / "out").exists()


@pytest.fixture
def tokens(workdir: Path) -> Path:
    """Token sequences and the token that follows each (next-token classification)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 128, (64, 12), generator=generator)
    y = torch.randint(0, 128, (64,), generator=generator)
    path = workdir / "tokens.npz"
    np.savez(path, x=x.numpy(), y=y.numpy())
    return path


def test_snip_on_a_token_model_is_theta_times_the_next_token_gradient(
    cli, model_dir: Path, tokens: Path, workdir: Path
) -> None:
    """snip scores equal |θ ⊙ ∂L/∂θ| computed directly: L the cross-entropy of the last position's
    logits against the next token, averaged over the one batch of all 64 samples."""
    result = cli(
        "score",
        model_dir,
        "-m",
        "snip",
        "--data",
        tokens,
        "--batch-size",
        "64",
        "-o",
        "s.safetensors",
    )
    assert result.exit_code == 0, result.stderr
    scores = load_file(workdir / "s.safetensors")
    net = transformers.AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    net.eval()
    data = np.load(tokens)
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    logits = net(input_ids=x).logits[:, -1, :]
    torch.nn.functional.cross_entropy(logits, y).backward()  # mean over the batch
    params = dict(net.named_parameters())
    assert scores, "no scores written"
    for name, score in scores.items():
        expected = (params[name].detach() * params[name].grad).abs()
        torch.testing.assert_close(score, expected, rtol=1e-4, atol=1e-6 * float(expected.max()))


@pytest.mark.parametrize("command", ["retrain", "grasp"])
def test_token_models_train_and_score_on_labelled_tokens(
    cli, model_dir: Path, tokens: Path, workdir: Path, command: str
) -> None:
    if command == "retrain":
        args = ["retrain", model_dir, "--data", tokens, "--steps", "3", "-o", "out"]
    else:
        args = ["prune", model_dir, "-m", "grasp", "-s", "0.5", "--data", tokens, "-o", "out"]
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    loaded = transformers.AutoModelForCausalLM.from_pretrained(workdir / "out")
    assert all(bool(torch.isfinite(p).all()) for p in loaded.parameters())
    report = report_of(result)
    if command == "grasp":
        assert report["pruning"]["achieved_sparsity"] == 0.5
    else:
        assert report["training"]["steps"] == 3


# --- the report's row order: the module built on the meta device from config.json ------------


def gpt2_folder(folder: Path, n_layer: int, tensors: dict[str, torch.Tensor] | None) -> Path:
    """A GPT-2 folder: ``config.json`` with ``n_layer`` layers; all its tensors unless given."""
    config = transformers.GPT2Config(n_layer=n_layer, n_embd=16, n_head=2, vocab_size=50)
    if tensors is None:
        transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    else:
        folder.mkdir()
        config.save_pretrained(folder)
        write_weights(folder / "model.safetensors", tensors)
    return folder


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The configs the report builds on the meta device to learn a folder's tensor order."""
    from prunecli.models import hf

    built: list[object] = []
    real = hf._on_meta

    def recorded(transformers: object, config: object, trust_remote_code: bool) -> object:
        built.append(config)
        return real(transformers, config, trust_remote_code)

    monkeypatch.setattr(hf, "_on_meta", recorded)
    return built


def test_gpt2_rows_follow_the_module_built_from_the_parsed_config(
    cli, workdir: Path, builds: list[object]
) -> None:
    folder = gpt2_folder(workdir / "gpt2", 2, None)
    report = report_of(cli("inspect", folder, "--all", "--json"))
    names = [layer["name"] for layer in report["layers"]]
    assert names[:4] == ["transformer.wte.weight", "transformer.wpe.weight"] + [
        "transformer.h.0.ln_1.weight",
        "transformer.h.0.ln_1.bias",
    ]  # the module's order: ln_1 before attn, which the alphabet puts first
    stored = load_file(folder / "model.safetensors")
    module = transformers.GPT2LMHeadModel.from_pretrained(folder)
    assert names == [name for name in module.state_dict() if name in stored]
    # built twice on meta: once for the rows' order, once to count the MACs (jobs/cost.py)
    assert names != sorted(names) and len(builds) == 2
    assert all(type(b).__name__ == "GPT2Config" and b.n_layer == 2 for b in builds)


def test_gpt2_config_claiming_400_layers_beside_one_tensor_is_not_built(
    cli, workdir: Path, builds: list[object]
) -> None:
    """GPT-2's ``n_layer`` escaped the guard that looked for ``layers``: 400 layers were built
    on the meta device (6 s) only to sort the rows of a one-tensor report."""
    weight = "transformer.h.0.attn.c_attn.weight"
    folder = gpt2_folder(workdir / "gpt2", 400, {weight: torch.ones(16, 48)})
    result = cli("inspect", folder)
    assert result.exit_code == 0, result.stderr
    assert weight in result.stdout
    assert builds == []  # the rows keep the file's order: nothing was built


def test_layer_counts_look_into_nested_configs() -> None:
    from prunecli.models.hf import layer_counts

    config = {
        "n_layer": 3,
        "layer_norm_epsilon": 1e-5,  # a float under a layer key is no count
        "text_config": {"num_hidden_layers": 400, "vision": {"num_layers": 7}},
        "n_embd": 1000,
        "use_layer_norm": True,  # a bool is no count either
    }
    assert sorted(layer_counts(config)) == [3, 7, 400]


def test_a_bound_on_layers_is_no_count(tmp_path) -> None:
    """Qwen2's max_window_layers (28 by default) is a limit, not a count: a 2-layer Qwen2 of 27
    tensors builds (it was refused as claiming more layers than the folder has tensors)."""
    from prunecli.models.hf import build_skeleton, layer_counts

    config = transformers.Qwen2Config(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    assert config.max_window_layers == 28
    assert layer_counts({**config.to_dict(), "min_layers": 99}) == [2]
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    stored = {n: tuple(t.shape) for n, t in load_file(str(tmp_path / "model.safetensors")).items()}
    assert len(stored) < 28
    model = build_skeleton(tmp_path, stored)
    assert len(model.model.layers) == 2
