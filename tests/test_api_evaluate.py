"""prunecli.evaluate and prunecli.sweep: the figures of `prunecli eval` and `prunecli sweep` on a
live module or a path, against torch, transformers and the CLI; the model left as it was; the
refusals."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import prunecli
from prunecli.errors import BadInput, Unsupported
from tests.conftest import report_of, write_calibrated_llama, write_llama, write_method_inputs
from tests.test_api import module_of, weights


@pytest.fixture
def inputs(workdir: Path) -> Path:
    """``data.npz`` (240 samples of 12 features, 3 classes) and ``init.safetensors`` beside."""
    return write_method_inputs(workdir)


def arrays(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.load(folder / "data.npz")
    return torch.from_numpy(data["x"]), torch.from_numpy(data["y"])


def logits(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():  # the MLP has neither dropout nor batch norm: train mode is eval mode
        return module(x)


def without_times(document: dict) -> dict:
    runs = [{k: v for k, v in run.items() if k != "seconds"} for run in document["runs"]]
    return {**document, "runs": runs, "seconds": None}


def test_a_module_is_evaluated_as_torch_computes_it_and_left_as_it_was(inputs: Path) -> None:
    module = module_of(inputs / "init.safetensors")  # in train mode
    before = weights(module)
    x, y = arrays(inputs)
    quality = prunecli.evaluate(module, (x, y)).quality
    assert module.training and all(sub.training for sub in module.modules())
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    out = logits(module, x)
    accuracy = float((out.argmax(1) == y).double().mean())
    assert quality["accuracy"]["value"] == pytest.approx(accuracy, abs=1e-12)
    assert quality["cross_entropy"]["value"] == pytest.approx(float(F.cross_entropy(out, y)))
    assert quality["accuracy"]["samples"] == 240 and quality["accuracy"]["split"] == "all"
    assert quality["accuracy"]["protocol"].startswith("all 240 samples of data, eval mode")


def test_a_path_gives_the_figures_of_prunecli_eval(cli, inputs: Path) -> None:
    ours = prunecli.evaluate(inputs / "init.safetensors", "data.npz").quality
    theirs = report_of(cli("eval", "init.safetensors", "--data", "data.npz", "--json"))["quality"]
    assert ours == theirs


def test_similarity_to_a_reference_module_is_the_cosine_of_their_logits(inputs: Path) -> None:
    dense = module_of(inputs / "init.safetensors")
    pruned, _ = prunecli.prune(dense, "magnitude", 0.7, inplace=False)
    x, y = arrays(inputs)
    quality = prunecli.evaluate(pruned, (x, y), reference=dense).quality
    ours, theirs = logits(pruned, x), logits(dense, x)
    cosine = float(F.cosine_similarity(ours, theirs, dim=1).double().mean())
    agreement = float((ours.argmax(1) == theirs.argmax(1)).double().mean())
    assert quality["cosine_similarity"]["value"] == pytest.approx(cosine, abs=1e-6)
    assert quality["top1_agreement"]["value"] == pytest.approx(agreement, abs=1e-12)
    assert cosine < 0.999 and quality["top1_agreement"]["reference"] == "<Sequential>"


def test_a_live_causal_lm_on_token_ids_has_the_perplexity_of_its_loss(workdir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    model = transformers.LlamaForCausalLM.from_pretrained(write_llama(workdir / "llama")).eval()
    ids = torch.randint(0, 32, (1, 50), generator=torch.Generator().manual_seed(0))
    entry = prunecli.evaluate(model, ids, seq_len=16).quality["perplexity"]
    windows = ids.reshape(-1)[:48].reshape(3, 16)  # 2 tokens left over
    with torch.no_grad():
        losses = [float(model(w[None], labels=w[None]).loss) for w in windows]
    assert entry["value"] == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)
    assert entry["protocol"].startswith("3 non-overlapping windows of 16 tokens of token ids")
    with pytest.raises(BadInput, match="a model in memory has no tokenizer files"):
        prunecli.evaluate(model, "corpus.txt", seq_len=16)
    with pytest.raises(BadInput, match="token ids, integers; got torch.float32"):
        prunecli.evaluate(model, ids.float(), seq_len=16)
    with pytest.raises(Unsupported, match="sweep evaluates classifiers"):
        prunecli.sweep(model, "magnitude", [0.5], "digits")


def test_a_sweep_of_a_module_equals_prune_and_evaluate_and_leaves_it(inputs: Path) -> None:
    module = module_of(inputs / "init.safetensors")
    before = weights(module)
    x, y = arrays(inputs)
    ticks: list[tuple[int, int]] = []
    doc = prunecli.sweep(
        module,
        ["magnitude", "random"],
        [0.5, 0.9],
        (x, y),
        seeds=[0, 1],
        progress=lambda *t: ticks.append(t),
    )
    assert doc["schema"] == "prunecli.sweep/1" and doc["model"] == "<Sequential>"
    assert ticks[0] == (0, 8) and ticks[-1] == (8, 8) and len(doc["runs"]) == 8
    assert module.training and all(
        torch.equal(before[k], v) for k, v in module.state_dict().items()
    )
    (run,) = [
        r for r in doc["runs"] if (r["method"], r["sparsity"], r["seed"]) == ("random", 0.9, 1)
    ]
    pruned, _ = prunecli.prune(module, "random", 0.9, seed=1, inplace=False)
    quality = prunecli.evaluate(pruned, (x, y)).quality
    assert run["accuracy"] == pytest.approx(quality["accuracy"]["value"], abs=1e-12)
    assert run["loss"] == pytest.approx(quality["cross_entropy"]["value"], rel=1e-6)


def test_a_sweep_of_a_path_is_the_cli_sweep_and_writes_its_files(cli, inputs: Path) -> None:
    args = {"seeds": "2", "retrain_steps": 3, "batch_size": 16}
    doc = prunecli.sweep(
        "init.safetensors",
        "magnitude",
        ["0.5", "2:4"],
        "data.npz",
        output="s.json",
        plot="s.svg",
        **args,
    )
    result = cli(
        "sweep", "init.safetensors", "--methods", "magnitude", "--sparsities", "0.5,2:4",
        "--data", "data.npz", "--seeds", "2", "--retrain-steps", "3", "--batch-size", "16",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert without_times(doc) == without_times(json.loads(result.stdout))
    assert json.loads(Path("s.json").read_text())["runs"] == doc["runs"]
    assert Path("s.svg").read_bytes().lstrip().startswith(b"<?xml")
    with pytest.raises(BadInput, match="already exists"):
        prunecli.sweep("init.safetensors", "magnitude", [0.5], "data.npz", output="s.json")


def test_a_causal_lm_folder_is_swept_as_the_cli_sweeps_it(cli, workdir: Path) -> None:
    write_calibrated_llama(workdir)
    (workdir / "corpus.txt").write_text((workdir / "corpus.txt").read_text()[:2000])
    windows = {"samples": 4, "seq_len": 16}
    doc = prunecli.sweep("llama", "magnitude,wanda", [0.6], "corpus.txt", seeds=(3,), **windows)
    result = cli(
        "sweep", "llama", "--methods", "magnitude,wanda", "--sparsities", "0.6", "--seeds", "3",
        "--data", "corpus.txt", "--samples", "4", "--seq-len", "16", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert without_times(doc) == without_times(json.loads(result.stdout))
    assert doc["metric"] == "perplexity" and len(doc["runs"]) == 2
    with pytest.raises(BadInput, match="retrain_steps= does not apply"):
        prunecli.sweep("llama", "magnitude", [0.5], "corpus.txt", retrain_steps=5)
    with pytest.raises(BadInput, match="seq_len= does not apply"):
        prunecli.sweep(module_of(write_method_inputs(workdir) / "init.safetensors"),
                       "magnitude", [0.5], "data.npz", seq_len=16)  # fmt: skip


@pytest.mark.parametrize(
    ("call", "keywords", "message"),
    [
        ("evaluate", {"data": torch.ones(3)}, "a tensor is token ids, for a transformer"),
        ("evaluate", {}, "eval needs data to evaluate on"),
        ("evaluate", {"data": "digits", "batch_size": 0}, "batch_size= must be a whole number"),
        ("evaluate", {"data": "digits", "metric": "bogus"}, "--metric 'bogus' is not known"),
        ("evaluate", {"latency": True, "repeats": "5"}, "repeats= must be a whole number"),
        ("evaluate", {"data": "digits", "seq_len": 0}, "seq_len= must be a whole number"),
        ("sweep", {"jobs": 2}, "jobs=2 runs processes that load the model from its file"),
        ("sweep", {"methods": "magnitude,bogus"}, "unknown method 'bogus'"),
        ("sweep", {"sparsities": [0.5, 1.0]}, "--sparsities 1.0 is outside [0, 1)"),
        ("sweep", {"plot": "curve.gif"}, "a plot is drawn as .png, .svg or .pdf"),
        ("sweep", {"data": None}, "sweep evaluates on labelled data"),
    ],
)
def test_bad_input_raises_the_cli_message(inputs: Path, call: str, keywords, message) -> None:  # noqa: ANN001
    module = module_of(inputs / "init.safetensors")
    if call == "sweep":
        keywords = {"methods": ["magnitude"], "sparsities": [0.5], "data": "data.npz", **keywords}
    with pytest.raises(BadInput, match=re.escape(message)):
        getattr(prunecli, call)(module, **keywords)
    assert not Path("curve.gif").exists()
