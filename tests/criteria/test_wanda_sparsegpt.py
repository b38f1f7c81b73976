"""`prune --method wanda|sparsegpt` end to end on a tiny Llama folder, against the whole model
pruned in memory by an independent route (transformers' model, hooks, direct formulas)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from prunecli.calibration.blocks import Block
from prunecli.calibration.data import load_calibration
from prunecli.calibration.sparsegpt import sparsegpt_prune
from tests.calibration.test_runner import in_memory, read_folder
from tests.conftest import assert_refused, files_in, write_calibrated_llama

transformers = pytest.importorskip("transformers")

SIZES = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "vocab_size": 64}
WINDOWS = ("--samples", 4, "--seq-len", 16)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_calibrated_llama(tmp_path_factory.mktemp("calibrated"), **SIZES)


def corpus(llama: Path) -> Path:
    return llama.parent / "corpus.txt"


class Reference:
    """Independent pruning of each block from the captured inputs: Wanda's |W|·‖X‖ lowest per
    row (or per group of 4 keeping 2), or SparseGPT from a Hessian summed here."""

    def __init__(self, method: str, nm: bool = False) -> None:
        self.method, self.nm, self.inputs = method, nm, {}

    def observe(self, name: str, module: torch.nn.Module, inputs: torch.Tensor) -> None:
        x = inputs.double().reshape(-1, inputs.shape[-1])
        if self.method == "wanda":
            self.inputs[name] = self.inputs.get(name, 0) + (x * x).sum(0)
        else:
            self.inputs[name] = self.inputs.get(name, 0) + x.T @ x

    def prune_block(self, block: Block) -> None:
        for name, weight in block.weights.items():
            stat = self.inputs.pop(name)
            if self.method == "sparsegpt":
                pattern = (2, 4) if self.nm else None
                new, _ = sparsegpt_prune(weight, stat, None if self.nm else 0.5, pattern)
                weight.copy_(new)
                continue
            score = weight.double().abs() * stat.sqrt()
            rows, cols = score.shape
            if self.nm:
                groups = score.reshape(rows, cols // 4, 4)
                lowest = groups.argsort(dim=2, stable=True)[..., :2]
                keep = torch.ones_like(groups, dtype=torch.bool).scatter_(2, lowest, False)
                keep = keep.reshape(rows, cols)
            else:
                lowest = score.argsort(dim=1, stable=True)[:, : cols // 2]
                keep = torch.ones_like(score, dtype=torch.bool).scatter_(1, lowest, False)
            weight.mul_(keep)


def windows(llama: Path, data: Path) -> torch.Tensor:
    config = json.loads((llama / "config.json").read_text())
    return load_calibration(str(data), llama, config, 4, 16, seed=0).input_ids


def linear_names(tensors: dict[str, torch.Tensor]) -> list[str]:
    return [n for n in tensors if ".layers." in n and n.endswith("proj.weight")]


def check_outside_untouched(llama: Path, out: Path) -> None:
    """Embeddings, norms and head: the same bytes as the input."""
    before, after = read_folder(llama), read_folder(out)
    assert before.keys() == after.keys()
    for name in before:
        if name not in linear_names(before):
            assert torch.equal(before[name], after[name]), name


def metadata(out: Path) -> dict[str, str]:
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        return handle.metadata()


@pytest.mark.parametrize("nm", [False, True], ids=["0.5", "2:4"])
def test_wanda_masks_equal_the_whole_model_pruned_in_memory(cli, llama, tmp_path, nm) -> None:
    out = tmp_path / "out"
    ids = windows(llama, corpus(llama))
    if nm:  # token ids instead of text (the rows of the text's windows, as one stream)
        data = tmp_path / "ids.npz"
        np.savez(data, input_ids=ids.numpy())
        goal, ids = ("--pattern", "2:4"), windows(llama, data)
    else:
        data, goal = corpus(llama), ("--sparsity", "0.5")
    result = cli("prune", llama, "--method", "wanda", *goal, "--data", data, *WINDOWS, "-o", out)
    assert result.exit_code == 0, result.stderr
    expected = in_memory(llama, ids, Reference("wanda", nm), batch=4)
    got = read_folder(out)
    names = linear_names(got)
    assert len(names) == 14
    for name in names:
        assert torch.equal(got[name] != 0, expected[name] != 0), name
        assert torch.equal(got[name], expected[name]), name
        zeros = (got[name] == 0).sum(dim=1)
        assert (zeros == got[name].shape[1] // 2).all(), name  # exact per row
    check_outside_untouched(llama, out)
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert float(model.model.layers[1].mlp.down_proj.weight.eq(0).float().mean()) == 0.5
    meta = metadata(out)
    assert meta["prunecli.method"] == "wanda" and meta["prunecli.scope"] == "row"
    order = [f"self_attn.{p}_proj" for p in "qkvo"] + [
        f"mlp.{p}_proj" for p in ("gate", "up", "down")
    ]
    in_module_order = [f"model.layers.{i}.{sub}.weight" for i in range(2) for sub in order]
    assert json.loads(meta["prunecli.prunable"]) == in_module_order and set(names) == set(
        in_module_order
    )
    if nm:
        assert meta["prunecli.pattern"] == "2:4"
        assert cli("inspect", out, "--pattern", "2:4").exit_code == 0


@pytest.mark.parametrize("nm", [False, True], ids=["0.5", "2:4"])
def test_sparsegpt_end_to_end(cli, llama, tmp_path, nm) -> None:
    out = tmp_path / "out"
    goal = ("--pattern", "2:4") if nm else ("--sparsity", "50%")
    result = cli(
        "prune", llama, "--method", "sparsegpt", *goal, "--data", corpus(llama), *WINDOWS,
        "--dampening", "0.01", "-o", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pruning"]["method"] == "sparsegpt" and report["pruning"]["samples"] == 4
    assert report["pruning"]["achieved_sparsity"] == 0.5
    got = read_folder(out)
    expected = in_memory(llama, windows(llama, corpus(llama)), Reference("sparsegpt", nm), batch=4)
    before = read_folder(llama)
    for name in linear_names(got):
        weight = got[name]
        assert int((weight == 0).sum()) == weight.numel() // 2, name  # exact per layer
        assert torch.equal(weight != 0, expected[name] != 0), name
        torch.testing.assert_close(weight, expected[name], rtol=1e-4, atol=1e-5)
        kept = weight != 0
        assert not torch.equal(weight[kept], before[name][kept]), name  # updated, not masked
    check_outside_untouched(llama, out)
    transformers.AutoModelForCausalLM.from_pretrained(out)
    assert metadata(out)["prunecli.dampening"] == "0.01"
    if nm:
        assert cli("inspect", out, "--pattern", "2:4").exit_code == 0


def test_refused_before_anything_is_written(cli, llama, tmp_path) -> None:
    out = tmp_path / "out"
    text = corpus(llama)
    base = ("prune", llama, "--method", "wanda", "--sparsity", "0.5", "-o", out)
    cases = [
        ((*base,), 2, "needs calibration text: pass --data"),
        ((*base, "--data", text, "--samples", 0), 2, "--samples must be at least 1"),
        ((*base, "--data", text, "--seq-len", 100000), 2, "longer than the model takes"),
        ((*base, "--data", text, "--scope", "layer"), 2, "--scope layer does not apply"),
        ((*base, "--data", text, "--dampening", "0.1"), 2, "--dampening is an option of"),
        ((*base[:4], "--pattern", "2:3", "--data", text, "-o", out), 2, "multiple of 3"),
        ((*base[:4], "--pattern", "2:4", "--sparsity", "0.7", "--data", text), 2, "says 0.7"),
        ((*base, "--data", text, "--input-shape", "1,16"), 2, "--input-shape does not apply"),
        ((*base, "--data", text, "--device", "gpu"), 2, "--device 'gpu' is not known"),
        ((*base, "--data", text, "--device", "cuda:x"), 2, "--device 'cuda:x' is not known"),
    ]
    if not torch.cuda.is_available():
        cases.append(((*base, "--data", text, "--device", "cuda"), 2, "no CUDA device"))
    for args, code, fragment in cases:
        assert_refused(cli(*args), code, fragment)
    magnitude = ("prune", llama, "--method", "magnitude", "--sparsity", "0.5", "--samples", 4)
    assert_refused(cli(*magnitude, "-o", out), 2, "--samples is an option of")
    assert files_in(tmp_path) == set()


def test_refused_models_and_data(cli, llama, tmp_path, monkeypatch) -> None:
    out, text = tmp_path / "out", corpus(llama)
    single = llama / "model.safetensors"
    result = cli("prune", single, "--method", "sparsegpt", "--sparsity", "0.5", "--data", text)
    assert_refused(result, 3, "is not a Hugging Face folder")
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((llama / name).read_bytes())
    result = cli("prune", bare, "--method", "wanda", "--sparsity", "0.5", "--data", text, "-o", out)
    assert_refused(result, 2, "token ids")
    monkeypatch.setattr(transformers.LlamaPreTrainedModel, "_no_split_modules", None)
    result = cli("prune", bare, "--method", "wanda", "--sparsity", "0.5", "--data", text, "-o", out)
    assert_refused(result, 3, "does not name its block class")
    assert files_in(tmp_path) == {"bare", "bare/config.json", "bare/model.safetensors"}


def test_nan_activations_name_the_block(cli, llama, tmp_path) -> None:
    from safetensors.torch import save_file

    poisoned = tmp_path / "poisoned"
    poisoned.mkdir()
    for file in llama.iterdir():
        (poisoned / file.name).write_bytes(file.read_bytes())
    tensors = read_folder(llama)
    tensors["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(tensors, str(poisoned / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out"
    args = ("--method", "wanda", "--sparsity", "0.5", "--data", corpus(llama), *WINDOWS)
    assert_refused(cli("prune", poisoned, *args, "-o", out), 2, "block model.layers.1 gives NaN")
    assert not out.exists()
