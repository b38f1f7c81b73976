"""The contract of every registered training method (`prune --method M` that trains), checked
for each one as soon as it is registered: exact count, zeros kept, rounds reported, same seed
same file, and the weights really trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunecli.criteria import list_criteria
from tests.conftest import report_of, write_method_inputs

METHODS = [c.name for c in list_criteria() if c.trains()]
WEIGHTS = ("fc1.weight", "fc2.weight", "fc3.weight")
TOTAL = 352  # SMALL_MLP's prunable weights


@pytest.fixture
def start(cli, workdir: Path) -> Path:
    write_method_inputs(workdir)
    result = cli(
        "prune", "init.safetensors", "-m", "random", "-s", "0.3", "-o", "start.safetensors"
    )
    assert result.exit_code == 0, result.stderr
    return workdir / "start.safetensors"


@pytest.mark.parametrize("method", METHODS)
def test_training_method_contract(cli, start, workdir, method):
    args = ("--data", "data.npz", "--steps", "8", "--batch-size", "40", "--lr", "0.01")
    runs = []
    for output in ("a.safetensors", "b.safetensors"):
        result = cli("prune", start, "-m", method, "-s", "0.6", *args, "-o", output, "--json")
        assert result.exit_code == 0, result.stderr
        runs.append(report_of(result))
    a, b = load_file(workdir / "a.safetensors"), load_file(workdir / "b.safetensors")
    for name in a:
        assert torch.equal(a[name], b[name]), f"{method}: same seed, different {name}"
    before = load_file(start)
    zeros = sum(int((a[name] == 0).sum()) for name in WEIGHTS)
    report = runs[0]
    if not report["warnings"]:
        assert zeros == round(0.6 * TOTAL)
    for name in WEIGHTS:
        assert bool((a[name][before[name] == 0] == 0).all()), f"{method} revived a zero"
    assert not torch.equal(a["fc1.bias"], before["fc1.bias"]), f"{method} did not train"
    rounds = report["pruning"]["rounds"]
    assert rounds and all(0 <= row["sparsity"] <= 1 for row in rounds)
    assert report["training"]["settings"]["steps"] == 8
