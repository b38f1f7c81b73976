"""Where a pruned checkpoint goes: one file for one file, a folder like the input for a folder.

A folder output keeps the input's sharding (same shard files, same tensors in each), writes a new
``model.safetensors.index.json`` when the input had one, and copies the files that travel with
the weights (``config.json``, tokenizer and generation files), so ``from_pretrained`` loads it.
It is assembled in a temporary folder beside the target and renamed into place at the end.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from prunecli.io import safetensors as st
from prunecli.io.atomic import atomic_output
from prunecli.io.checkpoint import Checkpoint, Shard, atomic_folder, write_index
from prunecli.models.loaded import LoadedModel, model_metadata

#: writes one shard's tensors to a stream; returns what it wrote (written, data_bytes, stored, ...)
ShardWriter = Callable[[Shard, dict[str, str], BinaryIO], dict[str, Any]]


def write_output(
    checkpoint: Checkpoint,
    model: LoadedModel,
    output: str,
    extra: dict[str, Any],
    write_shard: ShardWriter,
) -> dict[str, Any]:
    """Write every shard with ``write_shard``; returns totals and per-shard figures."""
    if checkpoint.folder is None:
        shard = checkpoint.shards[0]
        with atomic_output(output) as stream:
            info = write_shard(shard, model_metadata(model, extra), stream)
        return _totals([(shard, info)], info["written"])
    done: list[tuple[Shard, dict[str, Any]]] = []
    with atomic_folder(output) as staging:
        for shard in checkpoint.shards:
            names = set(shard.names)
            shard_extra = dict(extra)
            if isinstance(extra.get("prunable"), list):
                shard_extra["prunable"] = [n for n in extra["prunable"] if n in names]
            shard_model = dataclasses.replace(model, metadata=dict(shard.header.metadata))
            file = staging / shard.path.name
            with open(file, "wb") as stream:
                info = write_shard(shard, model_metadata(shard_model, shard_extra), stream)
            written = st.read_header_file(file)  # what the index lists: the tensors as stored
            info["stored"] = list(written.entries)
            info["data_bytes"] = file.stat().st_size - written.data_start
            done.append((shard, info))
        written = finish_folder(checkpoint, staging, done)
    return _totals(done, written)


def finish_folder(
    checkpoint: Checkpoint, staging: Path, done: list[tuple[Shard, dict[str, Any]]]
) -> int:
    """The index of a sharded input (each shard's ``stored`` tensors and ``data_bytes`` from
    ``done``) and the companion files, beside the shards written; returns the folder's bytes."""
    if checkpoint.sharded:
        weight_map = {stored: shard.path.name for shard, info in done for stored in info["stored"]}
        total = sum(info["data_bytes"] for _, info in done)
        meta = {k: v for k, v in (checkpoint.index_metadata or {}).items() if k != "total_size"}
        write_index(staging, weight_map, total, meta)
    for companion in checkpoint.companions:
        shutil.copy2(companion, staging / companion.name)
    return sum(p.stat().st_size for p in staging.iterdir())


def _totals(done: list[tuple[Shard, dict[str, Any]]], written: int) -> dict[str, Any]:
    return {
        "written": written,
        "kept": {name: kept for _, info in done for name, kept in info.get("kept", {}).items()},
        "nonzero": sum(info.get("nonzero", 0) for _, info in done),
        "params": sum(info.get("params", 0) for _, info in done),
        "encoded": [name for _, info in done for name in info.get("encoded", [])],
        "shards": [
            {"file": shard.path.name, "file_bytes": info["written"]} for shard, info in done
        ],
    }
