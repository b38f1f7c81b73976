"""`prunecli eval`: each figure against an independent computation, and the refusals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import (
    assert_refused,
    report_of,
    run_refused,
    write_calibrated_llama,
    write_llama,
    write_weights,
    write_zoo,
)
from safetensors.torch import load_file, save_file

from prunecli.data.sources import load_data
from prunecli.models.zoo import build_arch

DIGITS_MLP = {"widths": [64, 16, 10]}


@pytest.fixture
def mlp(workdir: Path) -> Path:
    return write_zoo(workdir / "mlp.safetensors", "mlp", DIGITS_MLP)


def _shorten(corpus: Path, chars: int = 6000) -> str:
    """The first ``chars`` of the test corpus (enough windows, a fraction of the time)."""
    text = corpus.read_text()[:chars]
    corpus.write_text(text)
    return text


def quality(result) -> dict:  # noqa: ANN001
    assert result.exit_code == 0, result.stderr
    return report_of(result)["quality"]


def test_accuracy_and_cross_entropy_equal_torch_on_the_test_split(cli, mlp: Path) -> None:
    found = quality(cli("eval", mlp, "--data", "digits", "--batch-size", "50", "--json"))
    module = build_arch("mlp", DIGITS_MLP).module
    module.load_state_dict(load_file(str(mlp)))
    module.eval()
    data = load_data("digits")
    with torch.no_grad():
        logits = module(data.x_test)
    accuracy = int((logits.argmax(1) == data.y_test).sum()) / len(data.y_test)
    loss = float(F.cross_entropy(logits, data.y_test))
    assert found["accuracy"]["value"] == pytest.approx(accuracy, abs=1e-12)
    assert found["cross_entropy"]["value"] == pytest.approx(loss, rel=1e-5)
    assert found["accuracy"]["samples"] == len(data.y_test) == 360
    assert found["accuracy"]["split"] == "test"


def test_the_human_report_and_a_markdown_report_state_the_protocol(cli, mlp: Path) -> None:
    result = cli("eval", mlp, "--data", "digits", "--report", "eval.md")
    assert result.exit_code == 0, result.stderr
    assert "accuracy:" in result.stdout and "360 samples of the test split" in result.stdout
    saved = Path("eval.md").read_text()
    assert "cross entropy:" in saved and "360 samples of the test split of digits" in saved
    assert cli("eval", mlp, "--data", "digits", "-q").stdout == ""


def _ids_file(path: Path, rows: int, length: int, vocab: int = 32) -> np.ndarray:
    ids = np.random.default_rng(0).integers(0, vocab, size=(rows, length)).astype(np.int64)
    np.savez(path, input_ids=ids)
    return ids


def test_perplexity_equals_transformers_loss_on_the_same_windows(cli, workdir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = write_llama(workdir / "llama")
    ids = _ids_file(workdir / "ids.npz", 3, 21)  # 63 tokens: 3 windows of 16, 15 left out
    found = quality(cli("eval", folder, "--data", "ids.npz", "--seq-len", "16", "--json"))
    entry = found["perplexity"]
    model = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    windows = torch.from_numpy(ids.reshape(-1)[:48].reshape(3, 16))
    with torch.no_grad():
        losses = [float(model(w[None], labels=w[None]).loss) for w in windows]  # tokens 2..16
    assert entry["value"] == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)
    assert (entry["windows"], entry["seq_len"], entry["tokens_scored"]) == (3, 16, 45)
    assert "3 non-overlapping windows of 16 tokens" in entry["protocol"]
    assert "NLL of tokens 2..16" in entry["protocol"]


def test_a_model_that_predicts_the_uniform_distribution_has_perplexity_the_vocabulary(
    cli, workdir: Path
) -> None:
    folder = write_llama(workdir / "llama")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["lm_head.weight"] = torch.zeros_like(tensors["lm_head.weight"])  # all logits equal
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _ids_file(workdir / "ids.npz", 2, 32)
    found = quality(cli("eval", folder, "--data", "ids.npz", "--json"))
    assert found["perplexity"]["value"] == pytest.approx(32, rel=1e-4)
    assert found["perplexity"]["seq_len"] == 32  # min(2048, max_position_embeddings 32)


def test_text_is_cut_into_windows_of_its_tokens(cli, workdir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = write_calibrated_llama(workdir)
    text = _shorten(workdir / "corpus.txt")
    tokens = len(transformers.AutoTokenizer.from_pretrained(folder)(text)["input_ids"])
    found = quality(cli("eval", folder, "--data", "corpus.txt", "--seq-len", "32", "--json"))
    assert found["perplexity"]["windows"] == tokens // 32
    assert 1 < found["perplexity"]["value"] < 1000


def test_a_classifier_compared_with_itself_agrees_fully(cli, mlp: Path) -> None:
    found = quality(cli("eval", mlp, "--reference", mlp, "--data", "digits", "--json"))
    assert found["cosine_similarity"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert found["top1_agreement"]["value"] == 1.0
    assert found["top1_agreement"]["samples"] == 360


def _logits_on_the_test_split(path: Path | str) -> torch.Tensor:
    module = build_arch("mlp", DIGITS_MLP).module
    module.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        return module.eval()(load_data("digits").x_test)


def test_a_pruned_classifier_agrees_with_its_dense_model_as_torch_computes_it(
    cli, mlp: Path
) -> None:
    args = ("prune", mlp, "--method", "magnitude", "--sparsity", "0.9", "-o", "pruned.safetensors")
    assert cli(*args, "-q").exit_code == 0
    found = quality(
        cli("eval", "pruned.safetensors", "--reference", mlp, "--data", "digits", "--json")
    )
    ours, theirs = _logits_on_the_test_split("pruned.safetensors"), _logits_on_the_test_split(mlp)
    cosine = float(F.cosine_similarity(ours, theirs, dim=1).double().mean())
    agreement = float((ours.argmax(1) == theirs.argmax(1)).double().mean())
    assert found["cosine_similarity"]["value"] == pytest.approx(cosine, abs=1e-6)
    assert found["top1_agreement"]["value"] == pytest.approx(agreement, abs=1e-12)
    assert cosine < 0.999 and agreement < 1.0


def test_a_causal_lm_compared_with_itself_agrees_fully(cli, workdir: Path) -> None:
    folder = write_calibrated_llama(workdir)
    _shorten(workdir / "corpus.txt")
    args = ("eval", folder, "--reference", folder, "--data", "corpus.txt", "--json")
    found = quality(cli(*args))
    assert found["cosine_similarity"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert found["top1_agreement"]["value"] == 1.0
    assert "next-token predictions at every position" in found["top1_agreement"]["protocol"]


def test_latency_gives_median_and_spread_with_params_and_macs(cli, mlp: Path) -> None:
    args = ("eval", mlp, "--latency", "--repeats", "5", "--batch-size", "4", "--json")
    result = cli(*args)
    entry = quality(result)["latency_ms"]
    assert entry["min"] <= entry["q1"] <= entry["value"] <= entry["q3"] <= entry["max"]
    assert (entry["repeats"], entry["input"], entry["device"]) == (5, [4, 64], "cpu")
    cost = report_of(result)["cost"]
    assert cost["params"] == 64 * 16 + 16 + 16 * 10 + 10
    assert cost["macs"] == 64 * 16 + 16 * 10


def test_refusals(cli, mlp: Path, workdir: Path) -> None:
    weights = write_weights(workdir / "w.safetensors", load_file(str(mlp)))
    run_refused(cli, workdir, ("eval", weights, "--data", "digits"), 3, "--arch")
    run_refused(
        cli, workdir, ("eval", mlp, "--data", "digits", "--metric", "perplexity"), 3, "causal"
    )
    run_refused(cli, workdir, ("eval", mlp), 2, "--data")
    run_refused(cli, workdir, ("eval", mlp, "--metric", "accuracy"), 2, "--data")
    run_refused(
        cli, workdir, ("eval", mlp, "--metric", "similarity", "--data", "digits"), 2, "--reference"
    )
    lenet = write_zoo(workdir / "lenet.safetensors", "lenet5")
    args = ("eval", mlp, "--reference", lenet, "--data", "digits")
    run_refused(cli, workdir, args, 2, "lenet5")
    run_refused(cli, workdir, ("eval", mlp, "--data", "digits", "--seq-len", "0"), 2, "at least 1")
    run_refused(cli, workdir, ("eval", mlp, "--data", "digits", "--seq-len", "8"), 2, "classifier")
    args = ("eval", mlp, "--reference", mlp, "--data", "digits", "--metric", "accuracy")
    run_refused(cli, workdir, args, 2, "--reference compares outputs")
    narrow = write_zoo(workdir / "narrow.safetensors", "mlp", {"widths": [32, 16, 10]})
    args = ("eval", mlp, "--reference", narrow, "--data", "digits")
    run_refused(cli, workdir, args, 2, "narrow.safetensors: --data digits: samples")


def test_latency_of_a_causal_lm_times_seq_len_tokens_within_its_positions(
    cli, workdir: Path
) -> None:
    folder = write_llama(workdir / "llama")  # 32 positions
    args = ("eval", folder, "--latency", "--repeats", "3", "--batch-size", "2")
    entry = quality(cli(*args, "--seq-len", "16", "--json"))["latency_ms"]
    assert (entry["repeats"], entry["input"]) == (3, [2, 16])
    assert 0 < entry["min"] <= entry["value"] <= entry["max"]
    run_refused(cli, workdir, (*args, "--seq-len", "64"), 2, "32 positions")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is there")
def test_latency_beside_a_reference_gives_both_medians_and_the_speedup(cli, mlp: Path) -> None:
    args = ("prune", mlp, "--method", "magnitude", "--sparsity", "0.5", "-o", "half.safetensors")
    assert cli(*args, "-q").exit_code == 0
    found = quality(
        cli("eval", "half.safetensors", "--latency", "--reference", mlp, "--repeats", "4", "--json")
    )
    assert list(found) == ["latency_ms"]  # no --data: timings only
    entry = found["latency_ms"]
    reference = entry["reference"]
    assert entry["repeats"] == 4 and reference["source"] == str(mlp)
    assert reference["min"] <= reference["value"] <= reference["max"]
    assert entry["speedup"] == pytest.approx(reference["value"] / entry["value"])
    assert "interleaved with as many passes of the reference" in entry["protocol"]
    run_refused(cli, mlp.parent, ("eval", "half.safetensors", "--reference", mlp), 2, "--data")


def test_latency_on_cuda_without_a_gpu_is_refused(cli, mlp: Path) -> None:
    assert_refused(cli("eval", mlp, "--latency", "--device", "cuda"), 2, "cuda")


def test_a_reference_of_another_width_or_tokenizer_is_refused(cli, workdir: Path) -> None:
    folder = write_calibrated_llama(workdir)
    wider = write_llama(workdir / "wide", hidden_size=32)
    args = ("eval", folder, "--reference", wider, "--data", "corpus.txt")
    run_refused(cli, workdir, args, 2, "hidden_size")
    other = write_llama(workdir / "other")  # same sizes, no tokenizer
    args = ("eval", folder, "--reference", other, "--data", "corpus.txt")
    run_refused(cli, workdir, args, 2, "tokenizer")


def test_an_encoder_is_compared_by_its_pooled_hidden_state(cli, workdir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from conftest import write_tokenizer

    config = transformers.BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    models = {}
    for seed, name in ((0, "bert"), (1, "other")):  # same shapes, other weights
        torch.manual_seed(seed)
        models[name] = transformers.BertModel(config).eval()
        models[name].save_pretrained(workdir / name)
        write_tokenizer(workdir / name, 32)
    ids = _ids_file(workdir / "ids.npz", 2, 24)  # 48 tokens: 3 windows of 16
    found = quality(cli("eval", "bert", "--reference", "bert", "--data", "ids.npz", "--json"))
    assert found["cosine_similarity"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert found["cosine_similarity"]["samples"] == 3
    assert "top1_agreement" not in found  # an encoder predicts no tokens
    windows = torch.from_numpy(ids.reshape(3, 16))
    with torch.no_grad():  # the mean of the last hidden state over each window's tokens
        pooled = [models[name](input_ids=windows).last_hidden_state.mean(1) for name in models]
    cosine = float(F.cosine_similarity(*pooled, dim=1).double().mean())
    found = quality(cli("eval", "other", "--reference", "bert", "--data", "ids.npz", "--json"))
    assert found["cosine_similarity"]["value"] == pytest.approx(cosine, abs=1e-6)
    assert cosine < 0.99
    run_refused(cli, workdir, ("eval", "bert", "--data", "ids.npz"), 3, "--reference")
