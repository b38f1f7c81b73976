"""The report every command produces: per-layer sparsity, totals, topology, what was done, checks.

One record, rendered three ways by the CLI (Rich table, JSON ``prunecli.report/1``, Markdown).
The topology (DESIGN §4) is there whenever the graph and the input shape are known.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from prunecli.models.loaded import LoadedModel
from prunecli.models.order import in_order
from prunecli.topology.metrics import Topology, model_topology
from prunecli.version import __version__

SCHEMA = "prunecli.report/1"


@dataclass
class LayerStats:
    name: str
    shape: tuple[int, ...]
    dtype: str
    params: int
    nonzero: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.params if self.params else 0.0


@dataclass
class Check:
    name: str  # e.g. "min-sparsity"
    threshold: float
    value: float
    passed: bool
    message: str


@dataclass
class Report:
    command: str
    model: dict[str, Any]
    layers: list[LayerStats]
    all_params: int
    all_nonzero: int
    pruning: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    export: dict[str, Any] | None = None  # `export`: artifact, sizes, parity (docs/export.md)
    training: dict[str, Any] | None = None  # `retrain`, training methods: settings, history
    seconds: float | None = None
    checks: list[Check] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    topology: Topology | None = None
    topology_error: str | None = None  # why the topology is missing although the graph is known
    pattern: dict[str, Any] | None = None  # `inspect --pattern N:M`: compliance per layer
    cost: dict[str, Any] | None = None  # params and MACs, with their ratios (jobs/cost.py)
    structure: dict[str, Any] | None = None  # structured pruning: units kept per group
    quality: dict[str, Any] | None = None  # metric name → {metric, value, protocol, …} (eval)

    @property
    def prunable_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def prunable_nonzero(self) -> int:
        return sum(layer.nonzero for layer in self.layers)

    @property
    def sparsity(self) -> float:
        total = self.prunable_params
        return 1.0 - self.prunable_nonzero / total if total else 0.0

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "schema": SCHEMA,
            "command": self.command,
            "prunecli_version": __version__,
            "model": self.model,
            "layers": [layer_json(layer, self.topology) for layer in self.layers],
            "totals": {
                "prunable_params": self.prunable_params,
                "prunable_nonzero": self.prunable_nonzero,
                "sparsity": self.sparsity,
                "all_params": self.all_params,
                "all_nonzero": self.all_nonzero,
            },
            "topology": topology_json(self.topology) if self.topology else None,
            "cost": self.cost,
            "pruning": self.pruning,
            "structure": self.structure,
            "output": self.output,
            "export": self.export,
            "training": self.training,
            "seconds": self.seconds,
            "pattern": self.pattern,
            "quality": self.quality,
            "checks": [check.__dict__ for check in self.checks],
            "warnings": self.warnings,
        }
        return document


def layer_json(layer: LayerStats, topology: Topology | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": layer.name,
        "shape": list(layer.shape),
        "dtype": layer.dtype,
        "params": layer.params,
        "nonzero": layer.nonzero,
        "sparsity": layer.sparsity,
    }
    if topology is not None:  # null for tensors outside it (biases under `inspect --all`)
        found = topology.layer(layer.name)
        entry["effective_weights"] = found.effective_weights if found else None
        entry["effective_nodes"] = found.effective_nodes if found else None
        entry["nodes"] = found.nodes if found else None
        entry["collapsed"] = found.collapsed if found else None
    return entry


def topology_json(topology: Topology) -> dict[str, Any]:
    paths = topology.log10_paths
    return {
        # null when no path is left (the count is 0), or when too many to count (a warning says so)
        "log10_effective_paths": paths if paths is not None and math.isfinite(paths) else None,
        "effective_weights": topology.effective_weights,
        "prunable_weights": topology.weights,
        "effective_sparsity": topology.effective_sparsity,
        "effective_nodes": topology.effective_nodes,
        "nodes": topology.nodes,
        "collapsed_layers": topology.collapsed_layers,
    }


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def layer_stats(model: LoadedModel, names: Sequence[str]) -> list[LayerStats]:
    """One entry per name, in the model's declared order (models/order.py)."""
    return [
        LayerStats(
            name=name,
            shape=tuple(model.tensors[name].shape),
            dtype=dtype_name(model.tensors[name].dtype),
            params=model.tensors[name].numel(),
            nonzero=int(model.tensors[name].count_nonzero()),
        )
        for name in in_order(model, names)
    ]


def model_summary(model: LoadedModel) -> dict[str, Any]:
    arch = model.arch
    summary = {
        "path": model.source,
        "format": model.format,
        "file_bytes": model.file_bytes,
        "arch": arch.name if arch else None,
        "arch_kwargs": arch.kwargs if arch else None,
        "input_shape": list(arch.input_shape) if arch and arch.input_shape else None,
        "num_classes": arch.num_classes if arch else None,
    }
    checkpoint = model.checkpoint
    if checkpoint is not None and checkpoint.folder is not None:
        summary["format"] = "safetensors-folder"
        summary["shards"] = [
            {
                "file": shard.path.name,
                "tensors": len(shard.names),
                "file_bytes": shard.file_bytes,
            }
            for shard in checkpoint.shards
        ]
    if model.onnx is not None:  # an .onnx input: its graph's inputs and outputs, as stored
        from prunecli.io.onnx import graph_values

        summary["graph"] = graph_values(model.onnx)
    if model.hf_config is not None:
        summary["hf_architecture"] = (model.hf_config.get("architectures") or [None])[0]
    return summary


def build_report(
    command: str,
    model: LoadedModel,
    names: Sequence[str],
    prunable: Sequence[str] | None = None,
    input_shape: tuple[int, ...] | None = None,
    topology: bool = True,
) -> Report:
    """The report on ``names``; its topology (unless ``topology`` is off) covers ``prunable``
    (default: ``names``)."""
    all_params = sum(tensor.numel() for tensor in model.tensors.values())
    all_nonzero = sum(int(tensor.count_nonzero()) for tensor in model.tensors.values())
    report = Report(
        command=command,
        model=model_summary(model),
        layers=layer_stats(model, names),
        all_params=all_params,
        all_nonzero=all_nonzero,
    )
    if topology:
        add_topology(report, model, list(names if prunable is None else prunable), input_shape)
    return report


def add_topology(
    report: Report,
    model: LoadedModel,
    prunable: Sequence[str],
    input_shape: tuple[int, ...] | None = None,
) -> None:
    """Attach the topology when the graph is known; silently nothing for weights-only models."""
    if model.module is None:
        return
    if input_shape is None and (model.arch is None or model.arch.input_shape is None):
        report.topology_error = "the model's input shape is unknown"
        return
    try:
        report.topology = model_topology(model, prunable, input_shape)
    except Exception as exc:  # noqa: BLE001 - the user's module may refuse an all-ones input
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        report.topology_error = f"it could not be computed ({detail})"
        report.warnings.append(f"topology not computed: {detail}")
        return
    if report.topology is not None and report.topology.log10_paths is None:
        report.warnings.append(
            "more effective paths than float64 can count (over 10^616, with skip connections); "
            "effective weights, nodes and collapsed layers are exact"
        )
