"""`prune --method wanda|sparsegpt` with --include / --exclude (which linear layers inside the
blocks are pruned) and --dry-run (the plan, nothing written), on a tiny Llama folder, against
the whole model pruned in memory with only the chosen layers (tests/calibration/test_runner.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prunecli.calibration.blocks import Block
from prunecli.criteria import wanda as wanda_module
from tests.calibration.test_runner import in_memory, read_folder
from tests.conftest import assert_refused, files_in, write_llama
from tests.criteria.test_wanda_sparsegpt import Reference, metadata

pytest.importorskip("transformers")

SIZES = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "vocab_size": 64}
WINDOWS = ("--samples", 4, "--seq-len", 16)
ORDER = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
ALL = [f"model.layers.{i}.{sub}.weight" for i in range(2) for sub in ORDER]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block Llama without a tokenizer, and ``ids.npz`` beside it (8 rows of 32 ids)."""
    root = tmp_path_factory.mktemp("choice")
    folder = write_llama(root / "llama", **SIZES)
    ids = np.random.default_rng(0).integers(0, SIZES["vocab_size"], (8, 32))
    np.savez(root / "ids.npz", input_ids=ids)
    return folder


def ids_of(llama: Path) -> Path:
    return llama.parent / "ids.npz"


def windows(llama: Path) -> torch.Tensor:
    """The 4 windows of 16 tokens the CLI draws (seed 0), as the independent route takes them."""
    from prunecli.calibration.data import load_calibration

    config = json.loads((llama / "config.json").read_text())
    return load_calibration(str(ids_of(llama)), llama, config, 4, 16, seed=0).input_ids


class Chosen:
    """The reference pruner, shown and asked to prune only ``weights``."""

    def __init__(self, reference: Reference, weights: list[str]) -> None:
        self.reference, self.layers = reference, [w.removesuffix(".weight") for w in weights]

    def observe(self, name: str, module: torch.nn.Module, inputs: torch.Tensor) -> None:
        if name in self.layers:
            self.reference.observe(name, module, inputs)

    def prune_block(self, block: Block) -> None:
        linears = {n: m for n, m in block.linears.items() if n in self.layers}
        self.reference.prune_block(Block(block.index, block.name, block.module, linears))


def run(cli, llama: Path, method: str, *flags: object):  # noqa: ANN201
    goal = ("--sparsity", "0.5")
    return cli("prune", llama, "--method", method, *goal, "--data", ids_of(llama), *WINDOWS, *flags)


def test_include_and_exclude_prune_only_the_chosen_layers(cli, llama, tmp_path, monkeypatch):
    """Block 0 has nothing chosen (it still runs: block 1 sees its dense outputs); block 1's
    mlp only. No statistics are made for the other layers."""
    made: list[str] = []
    norms = wanda_module.ColumnNorms

    def counted(in_features: int, layer: str | None = None):  # noqa: ANN202
        made.append(layer)
        return norms(in_features, layer)

    monkeypatch.setattr(wanda_module, "ColumnNorms", counted)
    out = tmp_path / "out"
    flags = ("--include", "*.mlp.*", "--exclude", "model.layers.0.*", "-o", out, "--json")
    result = run(cli, llama, "wanda", *flags)
    assert result.exit_code == 0, result.stderr
    chosen = [f"model.layers.1.mlp.{p}_proj.weight" for p in ("gate", "up", "down")]
    assert made == [name.removesuffix(".weight") for name in chosen]
    expected = in_memory(llama, windows(llama), Chosen(Reference("wanda"), chosen), batch=4)
    got, before = read_folder(out), read_folder(llama)
    assert got.keys() == before.keys()
    for name, tensor in got.items():
        assert torch.equal(tensor, expected[name]), name  # bit for bit, dense ones included
        if name in chosen:
            assert ((tensor == 0).sum(dim=1) == tensor.shape[1] // 2).all(), name
        else:
            assert torch.equal(tensor, before[name]), name
    assert json.loads(metadata(out)["prunecli.prunable"]) == chosen
    report = json.loads(result.stdout)
    assert [layer["name"] for layer in report["layers"]] == chosen
    assert report["pruning"]["achieved_sparsity"] == 0.5


def test_exclude_alone_with_sparsegpt(cli, llama, tmp_path) -> None:
    out = tmp_path / "out"
    result = run(cli, llama, "sparsegpt", "--exclude", "*.self_attn.*", "-o", out)
    assert result.exit_code == 0, result.stderr
    chosen = [name for name in ALL if ".mlp." in name]
    reference = Chosen(Reference("sparsegpt"), chosen)
    expected = in_memory(llama, windows(llama), reference, batch=4)
    got, before = read_folder(out), read_folder(llama)
    for name in got:
        if name in chosen:
            assert int((got[name] == 0).sum()) == got[name].numel() // 2, name
            assert torch.equal(got[name] != 0, expected[name] != 0), name
            torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)
        else:
            assert torch.equal(got[name], before[name]), name
    assert json.loads(metadata(out)["prunecli.prunable"]) == chosen


def test_patterns_refused_before_anything_is_written(cli, llama, tmp_path) -> None:
    out = tmp_path / "out"
    cases = [
        (("--include", "*"), 3, "--include '*' matches lm_head.weight, outside the linear"),
        (("--include", "model.embed_tokens.*"), 3, "model.embed_tokens.weight", "(model.layers.*)"),
        (("--exclude", "*"), 3, "--exclude leaves no linear layer inside the blocks"),
    ]
    for flags, code, *fragments in cases:
        assert_refused(run(cli, llama, "wanda", *flags, "-o", out), code, *fragments)
    # a pattern matching nothing prunable: the very message every method gives
    for flags in (("--include", "*.nothing.*"), ("--include", "*norm*")):
        calibrated = run(cli, llama, "sparsegpt", *flags, "-o", out)
        assert_refused(calibrated, 2, f"--include {flags[1]!r} matches no prunable tensor")
        magnitude = cli("prune", llama, "--method", "magnitude", "--sparsity", "0.5", *flags)
        assert calibrated.stderr == magnitude.stderr
    assert files_in(tmp_path) == set()


def test_dry_run_shows_the_plan_and_writes_nothing(cli, llama, tmp_path) -> None:
    out = tmp_path / "out"
    flags = ("--include", "*.mlp.*", "-o", out, "--dry-run")
    result = run(cli, llama, "sparsegpt", *flags, "--dampening", "0.05", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    chosen = [name for name in ALL if ".mlp." in name]
    assert [entry["name"] for entry in plan["prunable"]] == chosen
    stored = read_folder(llama)
    assert sorted(entry["name"] for entry in plan["dense"]) == sorted(set(stored) - set(chosen))
    for entry in plan["prunable"] + plan["dense"]:
        assert entry["shape"] == list(stored[entry["name"]].shape), entry
    assert (plan["schema"], plan["method"], plan["scope"]) == (
        "prunecli.plan/1",
        "sparsegpt",
        "layer",
    )
    assert plan["totals"]["prunable_params"] == sum(stored[n].numel() for n in chosen)
    assert plan["calibration"] == {
        "data": str(ids_of(llama)),
        "samples": 4,
        "seq_len": 16,
        "seed": 0,
        "blocks": 2,
        "block_list": "model.layers",
        "dampening": 0.05,
    }
    table = cli("prune", llama, "--method", "wanda", "--pattern", "2:4", "--data", ids_of(llama),
                "--dry-run")  # fmt: skip
    assert table.exit_code == 0, table.stderr
    text = " ".join(table.stdout.split())
    assert "would prune" in text and "nothing was written" in text
    assert "calibration: 128 windows of 32 tokens from" in text  # the defaults (32 positions)
    assert "through 2 blocks of model.layers; pattern 2:4" in text
    assert files_in(tmp_path) == set()


def test_dry_run_checks_data_without_reading_it(cli, llama, tmp_path) -> None:
    """--data is required by a dry run too, and checked as far as its name and the folder
    say; its content is read by the run alone."""
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip archive")
    dry = ("prune", llama, "--method", "wanda", "--sparsity", "0.5", "--dry-run")
    assert cli(*dry, "--data", garbage).exit_code == 0
    assert_refused(cli(*dry[:-1], "--data", garbage, "-o", tmp_path / "out"), 2, "garbage.npz")
    text = tmp_path / "corpus.txt"
    text.write_text("some words")
    cases = [
        ((), "needs calibration text: pass --data"),
        (("--data", tmp_path / "missing.npz"), "missing.npz does not exist"),
        (("--data", text), "has no tokenizer"),
        (("--data", garbage.with_suffix(".csv")), "reads text (.txt, .jsonl) or token ids"),
    ]
    garbage.with_suffix(".csv").write_text("1,2")
    for flags, fragment in cases:
        assert_refused(cli(*dry, *flags), 2, fragment)
    assert files_in(tmp_path) == {"garbage.npz", "corpus.txt", "garbage.csv"}
