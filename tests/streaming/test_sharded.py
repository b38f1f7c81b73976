"""Sharded checkpoints and folders through the CLI: same sharding out, bad folders refused."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import files_in, report_of
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from prunecli.io.checkpoint import INDEX
from prunecli.jobs import stream as stream_jobs

SHARDS = {
    "model-00001-of-00002.safetensors": ["embed.weight", "layers.0.fc.weight", "layers.0.fc.bias"],
    "model-00002-of-00002.safetensors": ["layers.1.fc.weight", "layers.1.norm.weight", "step"],
}


def make_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "embed.weight": torch.randn(20, 8, generator=generator).to(torch.bfloat16),
        "layers.0.fc.weight": torch.randn(16, 8, generator=generator).to(torch.bfloat16),
        "layers.0.fc.bias": torch.randn(16, generator=generator).to(torch.bfloat16),
        "layers.1.fc.weight": torch.randn(8, 16, generator=generator).to(torch.bfloat16),
        "layers.1.norm.weight": torch.ones(8, dtype=torch.bfloat16),
        "step": torch.tensor([3]),
    }


def write_sharded(folder: Path, shards: dict[str, list[str]] = SHARDS) -> Path:
    folder.mkdir()
    tensors = make_tensors()
    weight_map = {}
    for file, names in shards.items():
        save_file({n: tensors[n] for n in names}, str(folder / file), {"format": "pt"})
        weight_map.update({n: file for n in names})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / INDEX).write_text(json.dumps(index))
    return folder


@pytest.fixture
def sharded(workdir: Path) -> Path:
    return write_sharded(workdir / "ckpt")


def test_prune_keeps_the_sharding_and_writes_a_new_index(cli, sharded: Path, workdir: Path) -> None:
    result = cli("prune", sharded, "-m", "magnitude", "-s", "0.5", "-o", "out", "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["output"]["format"] == "safetensors-folder"
    assert [s["file"] for s in report["model"]["shards"]] == list(SHARDS)
    out = workdir / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted([*SHARDS, INDEX])
    index = json.loads((out / INDEX).read_text())
    assert index["weight_map"] == json.loads((sharded / INDEX).read_text())["weight_map"]
    data = sum(
        (out / f).stat().st_size - 8 - int.from_bytes((out / f).read_bytes()[:8], "little")
        for f in SHARDS
    )
    assert index["metadata"]["total_size"] == data
    original = make_tensors()
    pruned = {}
    for file, names in SHARDS.items():
        pruned.update(load_file(str(out / file)))
        with safe_open(str(out / file), "pt") as handle:
            meta = handle.metadata()
        assert meta["format"] == "pt" and meta["prunecli.method"] == "magnitude"
        assert json.loads(meta["prunecli.prunable"]) == [
            n for n in names if n.endswith("fc.weight")
        ]
    prunable = ["layers.0.fc.weight", "layers.1.fc.weight"]  # embed and norm stay dense
    zeros = sum(int((pruned[n] == 0).sum()) for n in prunable)
    assert zeros == round(0.5 * 256)
    magnitudes = torch.cat([original[n].float().abs().flatten() for n in prunable])
    kept = torch.cat([(pruned[n] != 0).flatten() for n in prunable])
    assert float(magnitudes[~kept].max()) <= float(magnitudes[kept].min())
    for name in ("embed.weight", "layers.0.fc.bias", "layers.1.norm.weight", "step"):
        assert torch.equal(pruned[name], original[name])


def test_inspect_reports_per_shard_figures(cli, sharded: Path) -> None:
    result = cli("inspect", sharded, "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    shards = report["model"]["shards"]
    assert [s["params"] for s in shards] == [20 * 8 + 16 * 8 + 16, 8 * 16 + 8 + 1]
    assert sum(s["nonzero"] for s in shards) == report["totals"]["all_nonzero"]
    assert [layer["name"] for layer in report["layers"]] == [
        "layers.0.fc.weight",
        "layers.1.fc.weight",
    ]


def test_dry_run_lists_the_plan_and_writes_nothing(cli, sharded: Path, workdir: Path) -> None:
    before = files_in(workdir)
    result = cli("prune", sharded, "-m", "magnitude", "-s", "0.5", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["schema"] == "prunecli.plan/1" and plan["streaming"] is True
    assert [t["name"] for t in plan["prunable"]] == ["layers.0.fc.weight", "layers.1.fc.weight"]
    assert "embed.weight" in [t["name"] for t in plan["dense"]]
    assert files_in(workdir) == before


def test_a_big_file_streams_to_the_same_bytes(cli, workdir: Path, monkeypatch) -> None:
    save_file(make_tensors(), "model.safetensors")
    args = ("prune", "model.safetensors", "-m", "random", "-s", "0.7", "--scope", "erk", "-q")
    assert cli(*args, "-o", "memory.safetensors").exit_code == 0
    monkeypatch.setattr(stream_jobs, "STREAM_MIN_BYTES", 0)
    assert cli(*args, "-o", "stream.safetensors").exit_code == 0
    assert Path("stream.safetensors").read_bytes() == Path("memory.safetensors").read_bytes()


def refused(result, code: int, fragment: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert result.stderr.startswith("prunecli: error: ") and fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_index_naming_a_missing_shard(cli, sharded: Path, workdir: Path) -> None:
    (sharded / "model-00002-of-00002.safetensors").unlink()
    refused(cli("inspect", sharded), 2, "missing")
    refused(cli("prune", sharded, "-m", "magnitude", "-s", "0.5", "-o", "out"), 2, "missing")
    assert not (workdir / "out").exists()


def test_shard_holding_a_tensor_the_index_does_not_list(cli, sharded: Path) -> None:
    index = json.loads((sharded / INDEX).read_text())
    del index["weight_map"]["layers.0.fc.bias"]
    (sharded / INDEX).write_text(json.dumps(index))
    refused(cli("prune", sharded, "-m", "magnitude", "-s", "0.5"), 2, "does not list it")


def test_two_shards_with_the_same_tensor(cli, workdir: Path) -> None:
    shards = {**SHARDS, "model-00002-of-00002.safetensors": ["layers.0.fc.weight", "step"]}
    folder = write_sharded(workdir / "dup", shards)
    refused(cli("inspect", folder), 2, "in two shards")


def test_existing_output_folder_needs_force(cli, sharded: Path, workdir: Path) -> None:
    args = ("prune", sharded, "-m", "magnitude", "-s", "0.5", "-o", "out")
    assert cli(*args).exit_code == 0
    refused(cli(*args, "-s", "0.7"), 2, "already exists")
    assert cli(*args, "-s", "0.7", "--force").exit_code == 0  # a folder prunecli wrote
    assert not [name for name in files_in(workdir) if "/." in "/" + name]  # no temporaries
    (workdir / "out" / "keep.txt").write_text("mine")  # --force never replaces more than that
    refused(cli(*args, "--force"), 2, "prunecli did not write")
    assert (workdir / "out" / "keep.txt").read_text() == "mine"


def test_disk_full_mid_write_leaves_nothing(cli, sharded: Path, workdir: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = os.pwrite

    def full(handle: int, data, offset: int) -> int:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(handle, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    before = files_in(workdir)
    result = cli("prune", sharded, "-m", "magnitude", "-s", "0.5", "-o", "out")
    refused(result, 2, "No space left on device")
    assert "nothing was written" in result.stderr
    assert files_in(workdir) == before  # no output folder, no staging folder


def test_a_folder_is_not_written_to_a_file_or_stdout(cli, sharded: Path) -> None:
    for output in ("-", "out.safetensors"):
        refused(cli("prune", sharded, "-m", "magnitude", "-s", "0.5", "-o", output), 2, "folder")


def test_no_room_for_the_output_is_refused_up_front(
    cli, sharded: Path, workdir: Path, monkeypatch
) -> None:
    def full(handle: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    before = files_in(workdir)
    refused(cli("prune", sharded, "-m", "magnitude", "-s", "0.5", "-o", "out"), 2, "No space")
    assert files_in(workdir) == before
