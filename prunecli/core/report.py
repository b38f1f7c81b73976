"""The report every command produces: per-layer sparsity, totals, what was done, checks.

One record, rendered three ways by the CLI (Rich table, JSON ``prunecli.report/1``, Markdown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

import prunecli
from prunecli.core.model import LoadedModel

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
    seconds: float | None = None
    checks: list[Check] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

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
            "prunecli_version": prunecli.__version__,
            "model": self.model,
            "layers": [
                {
                    "name": layer.name,
                    "shape": list(layer.shape),
                    "dtype": layer.dtype,
                    "params": layer.params,
                    "nonzero": layer.nonzero,
                    "sparsity": layer.sparsity,
                }
                for layer in self.layers
            ],
            "totals": {
                "prunable_params": self.prunable_params,
                "prunable_nonzero": self.prunable_nonzero,
                "sparsity": self.sparsity,
                "all_params": self.all_params,
                "all_nonzero": self.all_nonzero,
            },
            "pruning": self.pruning,
            "output": self.output,
            "seconds": self.seconds,
            "checks": [check.__dict__ for check in self.checks],
            "warnings": self.warnings,
        }
        return document


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def layer_stats(model: LoadedModel, names: Sequence[str]) -> list[LayerStats]:
    return [
        LayerStats(
            name=name,
            shape=tuple(model.tensors[name].shape),
            dtype=dtype_name(model.tensors[name].dtype),
            params=model.tensors[name].numel(),
            nonzero=int(model.tensors[name].count_nonzero()),
        )
        for name in names
    ]


def model_summary(model: LoadedModel) -> dict[str, Any]:
    arch = model.arch
    return {
        "path": model.source,
        "format": model.format,
        "file_bytes": model.file_bytes,
        "arch": arch.name if arch else None,
        "arch_kwargs": arch.kwargs if arch else None,
        "input_shape": list(arch.input_shape) if arch and arch.input_shape else None,
        "num_classes": arch.num_classes if arch else None,
    }


def build_report(command: str, model: LoadedModel, names: Sequence[str]) -> Report:
    all_params = sum(tensor.numel() for tensor in model.tensors.values())
    all_nonzero = sum(int(tensor.count_nonzero()) for tensor in model.tensors.values())
    return Report(
        command=command,
        model=model_summary(model),
        layers=layer_stats(model, names),
        all_params=all_params,
        all_nonzero=all_nonzero,
    )
