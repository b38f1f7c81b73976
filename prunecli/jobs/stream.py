"""`prune` and `inspect` on checkpoints of any size, reading one chunk at a time (docs/large-models.md).

The masks and bytes written are those of the in-memory path (``jobs/prune.py``) for the same
inputs: same prunable tensors, same exact counts and tie-breaking, same metadata. Memory holds
the headers, a few chunks per worker, and for ``--format bitmask`` the kept values of one tensor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from prunecli.io import safetensors as st
from prunecli.io.checkpoint import Checkpoint, Shard
from prunecli.jobs.cost import add_cost, input_cost, original_metadata
from prunecli.jobs.report import LayerStats, Report, dtype_name, model_summary
from prunecli.jobs.settings import PruneSettings
from prunecli.models.loaded import LoadedModel
from prunecli.models.order import in_order
from prunecli.pruning.allocation import prune_count
from prunecli.streaming.passes import (
    ByteProgress,
    count_pattern,
    find_thresholds,
    open_reader,
)
from prunecli.streaming.plan import StreamPlan, plan_stream
from prunecli.streaming.write import copy_tensor

STREAM_METHODS = ("magnitude", "random")
#: single files at least this large are pruned by streaming (folders always are)
STREAM_MIN_BYTES = 256 << 20


def lazy_model(checkpoint: Checkpoint) -> LoadedModel:
    """The checkpoint as a LoadedModel of meta tensors: names, shapes and dtypes, no data."""
    tensors = {
        name: torch.empty(entry.shape, dtype=st.DTYPES[entry.dtype], device="meta")
        for name, _, entry in checkpoint.entries()
    }
    model = LoadedModel(
        tensors, dict(checkpoint.metadata), checkpoint.source, "safetensors", checkpoint.file_bytes
    )
    model.checkpoint, model.hf_config = checkpoint, checkpoint.config
    return model


def run_stream_prune(
    plan: StreamPlan,
    seed: int,
    output: str,
    extra: dict[str, Any],
    format: str,
    progress: ByteProgress | None = None,
) -> dict[str, Any]:
    """Find the thresholds, then write every shard (to ``output``: a file or a folder)."""
    from prunecli.streaming.output import write_output
    from prunecli.streaming.write import write_shard

    model = lazy_model(plan.checkpoint)
    with open_reader(shard.path for shard in plan.checkpoint.shards) as reader:
        if any(pool.pattern is not None for pool in plan.pools):
            count_pattern(reader, plan.space, plan.pools, seed, progress)
        else:
            find_thresholds(reader, plan.space, plan.pools, seed, progress)
        achieved = sum(pool.zeros_after for pool in plan.pools)
        total = sum(item.numel for item in plan.items.values())
        extra = {**extra, "sparsity.achieved": repr(achieved / total if total else 0.0)}

        def shard_writer(shard: Shard, metadata: dict[str, str], stream: Any) -> dict[str, Any]:
            return write_shard(reader, plan, seed, shard, metadata, stream, format, progress)

        return write_output(plan.checkpoint, model, output, extra, shard_writer)


def stream_report(
    plan: StreamPlan, result: dict[str, Any], pruning: dict[str, Any], seconds: float
) -> Report:
    model = lazy_model(plan.checkpoint)
    layers = [
        LayerStats(
            name,
            plan.items[name].entry.shape,
            dtype_name(st.DTYPES[plan.items[name].dtype]),
            plan.items[name].numel,
            result["kept"][name],
        )
        for name in in_order(model, plan.items)
    ]
    report = Report(
        command="prune",
        model=model_summary(model),
        layers=layers,
        all_params=result["params"],
        all_nonzero=result["nonzero"],
    )
    report.pruning = pruning
    report.seconds = seconds
    return report


def stream_prune_to_file(
    checkpoint: Checkpoint,
    names: list[str],
    method: str,
    settings: PruneSettings,
    output: str,
    format: str = "dense",
    progress: ByteProgress | None = None,
) -> Report:
    """What ``core.jobs.prune_to_file`` does for magnitude and random, one chunk at a time."""
    started = time.perf_counter()
    plan = plan_stream(
        checkpoint, names, method, settings.scope, settings.sparsity, settings.pattern
    )
    extra: dict[str, Any] = {
        "method": method,
        "sparsity.target": repr(settings.sparsity),
        "sparsity.achieved": "",  # known once the thresholds are
        "scope": settings.scope,
        "iterations": "1",
        "schedule": settings.schedule,
        "seed": str(settings.seed),
        "prunable": names,
    }
    if settings.pattern is not None:
        extra["pattern"] = str(settings.pattern)
    lazy = lazy_model(checkpoint)  # the shapes stay: the output's MACs are the input's
    before = input_cost(lazy)
    extra.update(original_metadata(lazy, before))
    result = run_stream_prune(plan, settings.seed, output, extra, format, progress)
    total = sum(item.numel for item in plan.items.values())
    zeros = total - sum(result["kept"].values())
    pruning = {
        "method": method,
        "target_sparsity": settings.sparsity,
        "achieved_sparsity": zeros / total if total else 0.0,
        "scope": settings.scope,
        "iterations": 1,
        "schedule": settings.schedule,
        "seed": settings.seed,
    }
    if settings.pattern is not None:
        pruning["pattern"] = str(settings.pattern)
    report = stream_report(plan, result, pruning, time.perf_counter() - started)
    report.warnings = zero_warnings(plan, settings, zeros, total)
    add_cost(report, lazy, before=before, shapes_kept=True)
    report.output = {
        "path": output,
        "format": "safetensors" if checkpoint.folder is None else "safetensors-folder",
        "file_bytes": result["written"],
        "layout": format,
    }
    if format == "bitmask":
        report.output["encoded"] = result["encoded"]
    if checkpoint.folder is not None:
        report.output["shards"] = result["shards"]
    return report


def zero_warnings(plan: StreamPlan, settings: PruneSettings, zeros: int, total: int) -> list[str]:
    """The warnings of ``core.pruning.prune_model`` when zeros were there before."""
    before = sum(pool.zeros for pool in plan.pools)
    target = prune_count(settings.sparsity, total)
    if before > target:
        return [
            f"the model already had {before / total:.4%} zeros among its prunable weights, "
            f"more than the {settings.sparsity:.4%} asked for; pruning never revives a zero"
        ]
    if zeros > target:
        return [
            f"{zeros / total:.4%} of the prunable weights are zero, more than the "
            f"{settings.sparsity:.4%} asked for: some layers already had more zeros than their "
            f"--scope {settings.scope} budget, and pruning never revives a zero"
        ]
    return []


def streamable(
    source: str,
    method: str | None,
    arch: str | None,
    output: str | None,
    plain: bool = True,
) -> Checkpoint | None:
    """The checkpoint to stream, or None when the in-memory path runs (see docs/large-models.md).

    Streaming runs for magnitude and random (one round, ``plain``) on a folder, or on a
    ``.safetensors`` file of at least ``STREAM_MIN_BYTES`` whose architecture is not known
    (a known one decides what is prunable through its module). Compressed inputs and
    ``.onnx``/``.pt2`` outputs go the in-memory way. Both paths write the same bytes.
    """
    from prunecli.io import bitmask as bm
    from prunecli.io.checkpoint import open_checkpoint

    if method is not None and (method not in STREAM_METHODS or not plain):
        return None
    if source == "-" or arch is not None:
        return None
    if output is not None and Path(output).suffix in (".pt2", ".onnx"):
        return None
    path = Path(source)
    if not path.is_dir() and (
        path.suffix != ".safetensors"
        or not path.is_file()
        or path.stat().st_size < STREAM_MIN_BYTES
    ):
        return None
    checkpoint = open_checkpoint(source)
    if any(bm.is_bitmask(shard.header.metadata, str(shard.path)) for shard in checkpoint.shards):
        return None
    if checkpoint.folder is None and _zoo_arch(checkpoint.metadata):
        return None
    return checkpoint


def _zoo_arch(metadata: dict[str, str]) -> bool:
    from prunecli.models import zoo
    from prunecli.models.loaded import META_ARCH

    return zoo.is_zoo_name(metadata.get(META_ARCH, ""))


def stream_inspect(checkpoint: Checkpoint, names: list[str]) -> Report:
    """The inspect report of ``names``, every tensor counted chunk by chunk, per shard too."""
    counts: dict[str, int] = {}
    shard_figures = []
    with open_reader(shard.path for shard in checkpoint.shards) as reader:
        for shard in checkpoint.shards:
            params = nonzero = 0
            for name, entry in shard.header.entries.items():
                counts[name] = 0
                for data, _, count in copy_tensor(reader, shard, entry):
                    counts[name] += count
                    reader.recycle(data)
                params += math.prod(entry.shape)
                nonzero += counts[name]
            shard_figures.append({"params": params, "nonzero": nonzero})
    model = lazy_model(checkpoint)
    summary = model_summary(model)
    for figures, extra in zip(summary.get("shards", []), shard_figures, strict=False):
        figures.update(extra)
    layers = [
        LayerStats(
            name,
            tuple(model.tensors[name].shape),
            dtype_name(model.tensors[name].dtype),
            model.tensors[name].numel(),
            counts[name],
        )
        for name in in_order(model, names)
    ]
    return Report(
        command="inspect",
        model=summary,
        layers=layers,
        all_params=sum(t.numel() for t in model.tensors.values()),
        all_nonzero=sum(counts.values()),
    )


def tensor_reader(checkpoint: Checkpoint) -> Callable[[str], torch.Tensor]:
    """Read one tensor of ``checkpoint`` by name (memory: that tensor), e.g. for
    `inspect --pattern`, which checks its groups of M."""
    from safetensors import safe_open

    where = {name: shard for name, shard, _ in checkpoint.entries()}

    def read(name: str) -> torch.Tensor:
        with safe_open(str(where[name].path), framework="pt") as handle:
            return handle.get_tensor(name)

    return read
