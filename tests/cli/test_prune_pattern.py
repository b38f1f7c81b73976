"""`prune --pattern N:M` and `--scope row` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_refused, metadata_of, write_llama, write_zoo
from safetensors.torch import load_file

from prunecli.structure.nm import Pattern, compliance, nm_keep


def _mlp(workdir: Path) -> Path:
    return write_zoo(workdir / "model.safetensors", "mlp", {"widths": [12, 16, 8, 4]})


def _prunable(path: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(path))
    return {name: tensors[name] for name in tensors if name.endswith("weight")}


def test_magnitude_2_4_is_per_group_top2(cli, workdir: Path) -> None:
    source = _mlp(workdir)
    result = cli("prune", source, "-m", "magnitude", "--pattern", "2:4", "-o", "out.safetensors")
    assert result.exit_code == 0, result.stderr
    before, after = _prunable(source), _prunable(workdir / "out.safetensors")
    assert after, after
    for name, weight in before.items():
        groups = weight.abs().reshape(-1, 4)
        top = torch.topk(groups, 2, dim=1).indices
        expected = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, top, True)
        assert torch.equal(after[name].reshape(-1, 4) != 0, expected), name
    assert metadata_of(workdir / "out.safetensors")["prunecli.pattern"] == "2:4"
    assert metadata_of(workdir / "out.safetensors")["prunecli.sparsity.target"] == "0.5"
    report = cli(
        "prune", source, "-m", "magnitude", "--pattern", "2:4", "-o", "o2.safetensors", "--json"
    )
    document = json.loads(report.stdout)
    assert document["pruning"]["pattern"] == "2:4"
    assert document["totals"]["sparsity"] == 0.5


@pytest.mark.parametrize("method", ["random", "synflow"])
def test_every_group_holds_at_most_n(cli, workdir: Path, method: str) -> None:
    source = _mlp(workdir)
    args = ["prune", source, "-m", method, "--pattern", "1:4", "-o", "out.safetensors"]
    if method == "synflow":
        args += ["--iterations", "5"]
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    for name, weight in _prunable(workdir / "out.safetensors").items():
        counts = (weight.reshape(-1, 4) != 0).sum(dim=1)
        assert int(counts.max()) <= 1 and int((counts == 1).sum()) == counts.numel(), name


def test_refusals(cli, workdir: Path) -> None:
    source = _mlp(workdir)
    for pattern in ("3:2", "0:4", "4:4"):
        assert_refused(cli("prune", source, "-m", "magnitude", "--pattern", pattern), 2, pattern)
    assert_refused(
        cli("prune", source, "-m", "magnitude", "--pattern", "2:4", "--sparsity", "0.7"),
        2,
        "--pattern 2:4",
    )
    # fc1 has rows of 12 inputs: no groups of 5
    assert_refused(cli("prune", source, "-m", "magnitude", "--pattern", "2:5"), 2, "fc1.weight")
    assert_refused(
        cli("prune", source, "-m", "magnitude", "--pattern", "2:4", "--scope", "layer"),
        2,
        "--scope",
    )
    assert_refused(
        cli("prune", source, "-m", "imp", "--pattern", "2:4", "--data", "mnist1d", "--steps", "1"),
        2,
        "trains",
    )
    assert_refused(cli("prune", source, "-m", "npb", "--pattern", "2:4"), 2, "own mask")
    assert not (workdir / "model.pruned.safetensors").exists()
    ok = cli(
        "prune", source, "-m", "magnitude", "--pattern", "2:4", "-s", "50%", "-o", "a.safetensors"
    )
    assert ok.exit_code == 0, ok.stderr


def test_streamed_folder_matches_in_memory(cli, workdir: Path) -> None:
    folder = write_llama(workdir / "llama", num_hidden_layers=2)
    result = cli("prune", folder, "-m", "magnitude", "--pattern", "2:4", "-o", "out", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["pruning"]["pattern"] == "2:4"
    written = load_file(str(workdir / "out" / "model.safetensors"))
    source = load_file(str(folder / "model.safetensors"))
    names = [n for n in source if n.startswith("model.layers.") and n.endswith("proj.weight")]
    assert len(names) == 14
    for name in names:
        expected = nm_keep(source[name].abs(), source[name] != 0, Pattern(2, 4))
        assert torch.equal(written[name] != 0, expected), name
        assert compliance(name, written[name], Pattern(2, 4)).broken == 0
    assert torch.equal(written["model.embed_tokens.weight"], source["model.embed_tokens.weight"])
    assert metadata_of(workdir / "out" / "model.safetensors")["prunecli.pattern"] == "2:4"
    # the same masks through the in-memory engine (random, with its scores drawn as in memory)
    streamed = cli("prune", folder, "-m", "random", "--pattern", "2:4", "-o", "r1", "--seed", "3")
    assert streamed.exit_code == 0, streamed.stderr
    from prunecli.api import prune

    tensors = dict(source)
    prune(tensors, "random", pattern="2:4", seed=3, include=names)
    again = load_file(str(workdir / "r1" / "model.safetensors"))
    for name in names:
        assert torch.equal(again[name] != 0, tensors[name] != 0), name


def test_scope_row_exact_counts(cli, workdir: Path) -> None:
    source = _mlp(workdir)
    result = cli(
        "prune", source, "-m", "magnitude", "-s", "0.3", "--scope", "row", "-o", "r.safetensors"
    )
    assert result.exit_code == 0, result.stderr
    before, after = _prunable(source), _prunable(workdir / "r.safetensors")
    for name, weight in before.items():
        row = weight.shape[1]
        keep = row - round(0.3 * row)
        assert (after[name] != 0).sum(dim=1).tolist() == [keep] * weight.shape[0], name
        top = torch.topk(weight.abs(), keep, dim=1).indices
        expected = torch.zeros_like(weight, dtype=torch.bool).scatter_(1, top, True)
        assert torch.equal(after[name] != 0, expected), name


def test_inspect_pattern_gate(cli, workdir: Path) -> None:
    source = _mlp(workdir)
    dense = cli("inspect", source, "--pattern", "2:4", "--json")
    assert dense.exit_code == 1, dense.stderr
    document = json.loads(dense.stdout)
    # fc1 16×12, fc2 8×16, fc3 4×8: 48 + 32 + 8 groups of 4, all dense
    assert (document["pattern"]["groups"], document["pattern"]["broken"]) == (88, 88)
    assert (
        cli("prune", source, "-m", "magnitude", "--pattern", "2:4", "-o", "p.safetensors").exit_code
        == 0
    )
    ok = cli("inspect", "p.safetensors", "--pattern", "2:4", "--json")
    assert ok.exit_code == 0, ok.stderr
    layers = json.loads(ok.stdout)["pattern"]["layers"]
    assert [(item["groups"], item["broken"]) for item in layers] == [(48, 0), (32, 0), (8, 0)]
    # 2:4 passes the weaker 3:4 too, not 1:4; fc1's rows of 12 cannot be checked for 2:8
    assert cli("inspect", "p.safetensors", "--pattern", "3:4").exit_code == 0
    assert cli("inspect", "p.safetensors", "--pattern", "1:4").exit_code == 1
    unchecked = cli("inspect", "p.safetensors", "--pattern", "4:8", "--json")
    assert unchecked.exit_code == 1
    assert json.loads(unchecked.stdout)["pattern"]["unchecked"] == ["fc1.weight"]
    assert_refused(cli("inspect", "p.safetensors", "--pattern", "0:4"), 2, "0:4")


def test_inspect_pattern_streamed_folder(cli, workdir: Path) -> None:
    folder = write_llama(workdir / "llama")
    assert cli("inspect", folder, "--pattern", "2:4").exit_code == 1
    assert cli("prune", folder, "-m", "magnitude", "--pattern", "2:4", "-o", "out").exit_code == 0
    result = cli("inspect", "out", "--pattern", "2:4")
    assert result.exit_code == 0, result.stderr
    assert "check pattern: passed" in result.stdout
