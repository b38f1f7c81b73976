"""`prunecli sweep` on a causal LM folder: a run's perplexity equals `prune` + `eval` run apart;
the refusals, before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import report_of, run_refused, write_calibrated_llama, write_tokenizer
from svg_lines import line_groups, vertices

WINDOWS = ("--seq-len", "16")
CALIBRATION = ("--samples", "4", *WINDOWS)


@pytest.fixture
def llama(workdir: Path) -> Path:
    """A one-block Llama with its tokenizer; ``corpus.txt`` beside it, cut to a few windows."""
    folder = write_calibrated_llama(workdir)
    corpus = workdir / "corpus.txt"
    corpus.write_text(corpus.read_text()[:3000])
    return folder


def perplexity_of(cli, folder: str) -> float:  # noqa: ANN001
    result = cli("eval", folder, "--data", "corpus.txt", *WINDOWS, "--json")
    return report_of(result)["quality"]["perplexity"]["value"]


def test_a_run_equals_prune_and_eval_run_apart(cli, llama: Path) -> None:
    result = cli(
        "sweep", "llama", "--methods", "magnitude,wanda", "--sparsities", "0.5,0.75,2:4",
        "--seeds", "1", "--data", "corpus.txt", *CALIBRATION, "-o", "s.json", "--plot", "s.svg",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "perplexity, mean ± std over 1 seed" in result.stdout and "wanda" in result.stdout
    doc = json.loads(Path("s.json").read_text())
    assert (doc["schema"], doc["metric"], len(doc["runs"])) == ("prunecli.sweep/1", "perplexity", 6)
    assert doc["settings"]["calibration"] == "corpus.txt" and doc["settings"]["samples"] == 4
    assert doc["dense"]["perplexity"] == pytest.approx(perplexity_of(cli, "llama"), rel=1e-12)
    runs = {(run["method"], run["pattern"] or run["sparsity"]): run for run in doc["runs"]}
    calibrated = ("--data", "corpus.txt", *CALIBRATION)
    for method, level, extra in (
        ("wanda", ("--sparsity", "0.75"), calibrated),
        ("magnitude", ("--sparsity", "0.75"), ()),
        ("wanda", ("--pattern", "2:4"), calibrated),
    ):
        pruned = cli(
            "prune", "llama", "--method", method, *level, "--seed", "1", *extra, "-o", "out", "-q",
        )  # fmt: skip
        assert pruned.exit_code == 0, pruned.stderr
        run = runs[(method, 0.75 if level[1] == "0.75" else "2:4")]
        assert run["perplexity"] == pytest.approx(perplexity_of(cli, "out"), rel=1e-12)
        assert run["achieved_sparsity"] == pytest.approx(float(level[1] == "0.75") * 0.25 + 0.5)
        shutil.rmtree("out")
    assert runs[("wanda", 0.75)]["perplexity"] != runs[("wanda", 0.5)]["perplexity"]
    groups = line_groups(Path("s.svg").read_bytes())
    assert set(groups) == {"method-magnitude", "method-wanda"}
    assert all(len(vertices(group)) == 2 for group in groups.values())
    assert b'id="dense"' in Path("s.svg").read_bytes()  # the dense model's dashed line
    assert not list(Path(".").glob("**/prunecli-sweep-*"))  # no run folder left behind


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("--methods", "snip"), 3, "compares magnitude, random, wanda, sparsegpt"),
        (("--methods", "magnitude", "--retrain-steps", "5"), 2, "--retrain-steps does not apply"),
        (("--methods", "magnitude", "--jobs", "2"), 2, "--jobs does not apply"),
        (("--methods", "wanda", "--seq-len", "64"), 2, "--seq-len 64 is longer"),
        (("--methods", "magnitude", "--calibration", "corpus.txt"), 2, "none is in --methods"),
        (("--methods", "magnitude", "--scope", "owl"), 2, "does not take it"),
        (("--methods", "wanda", "--calibration", "nothing.txt"), 2, "nothing.txt"),
        (("--methods", "magnitude", "-o", "corpus.txt"), 2, "input"),
        (("--methods", "sparsegpt", "--calibration", "-"), 2, "--calibration - : calibration"),
        (("--methods", "magnitude", "--batch-size", "0"), 2, "--batch-size"),
        (("--methods", "wanda", "--sparsities", "0.5,3:5"), 2, "not a multiple of 5"),
        (("--methods", "magnitude", "--sparsities", "3:5"), 2, "not a multiple of 5"),
    ],
)
def test_bad_input_is_refused_before_any_work(cli, llama: Path, args, code, fragment) -> None:  # noqa: ANN001
    base = ("sweep", "llama", "--sparsities", "0.5", "--data", "corpus.txt")
    run_refused(cli, llama.parent, (*base, *args), code, fragment)


def test_an_encoder_and_a_classifier_with_language_options_are_refused(cli, workdir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16,
    )  # fmt: skip
    transformers.BertModel(config).save_pretrained(workdir / "bert")
    write_tokenizer(workdir / "bert", 32)
    (workdir / "text.txt").write_text("some words " * 50)
    base = ("sweep", "bert", "--methods", "magnitude", "--sparsities", "0.5")
    run_refused(cli, workdir, (*base, "--data", "text.txt"), 3, "not one (config.json")
    from conftest import write_zoo

    write_zoo(workdir / "mlp.safetensors", "mlp", {"widths": [64, 16, 10]})
    classifier = ("sweep", "mlp.safetensors", "--methods", "magnitude", "--sparsities", "0.5")
    run_refused(cli, workdir, (*classifier, "--data", "digits", "--seq-len", "8"), 2, "classifier")
    run_refused(cli, workdir, (*classifier, "--data", "digits", "--methods", "wanda"), 3, "folder")
