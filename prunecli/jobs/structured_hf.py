"""`prune ./folder/ --granularity neuron|head`: a Hugging Face folder's FFN neurons or attention
heads removed, the same number in every block, written as a smaller folder whose config.json
describes it, so that plain ``from_pretrained`` loads it (docs/structured.md).

:func:`plan_structured_hf` checks everything before any weight or data is read (the blocks, their
groups, how many units each keeps: that depends on shapes alone); :func:`structured_hf_to_file`
then cuts block by block — through the block runner on calibration windows when there are
``--data`` (activation-aware scores, reconstruction), else reading one block at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunecli.calibration.data import (
    check_activations,
    check_sizes,
    load_calibration,
    max_positions,
)
from prunecli.calibration.runner import BlockModel, open_blocks, prune_blocks
from prunecli.calibration.shards import FolderWriter
from prunecli.criteria.wanda import CALIBRATION_OPTIONS
from prunecli.errors import BadInput, Unsupported
from prunecli.io.checkpoint import atomic_folder, open_checkpoint
from prunecli.jobs.cost import add_cost, input_cost, original_metadata
from prunecli.jobs.report import Report, model_summary
from prunecli.jobs.settings import PruneSettings
from prunecli.jobs.stream import lazy_model, stream_inspect
from prunecli.jobs.structured_cut import BlockCutter
from prunecli.pruning.criterion import Criterion
from prunecli.structure.groups import Group
from prunecli.structure.transformer import block_linears, shrunk_config, transformer_groups
from prunecli.structure.units import uniform_keep

#: --scope values a folder takes: every block keeps the same units (config.json holds one width)
SCOPES = ("global", "layer")
#: methods scored from activations rather than per-weight scores
ACTIVATION_METHODS = ("wanda",)


@dataclass(frozen=True)
class StructuredHFPlan:
    """What a structured run on a folder removes, decided before any weight is read."""

    opened: BlockModel
    method: str
    granularity: str
    settings: PruneSettings
    groups: list[Group]  # one per block
    keep: int  # units every block keeps
    achieved: float  # fraction of the blocks' linear-layer parameters removed
    names: list[str]  # the blocks' linear-layer parameters
    shapes: dict[str, tuple[int, ...]]  # the new shapes of the tensors cut
    config: dict[str, Any]  # the output's config.json
    round_to: int | None
    reconstruct: bool
    samples: int | None = None  # calibration windows, with --data
    seq_len: int | None = None

    @property
    def removed_params(self) -> int:
        return sum(_numel(self.opened.tensors.shapes()[n]) for n in self.names) - sum(
            _numel(self.shapes.get(n, self.opened.tensors.shapes()[n])) for n in self.names
        )

    @property
    def linear_params(self) -> int:
        return sum(_numel(self.opened.tensors.shapes()[n]) for n in self.names)


def check_method(criterion_class: type[Criterion], granularity: str) -> bool:
    """Refuse a method a folder's units cannot be scored by; whether it scores from
    activations (wanda) rather than from per-weight scores summed (magnitude, random)."""
    name = criterion_class.name
    if name in ACTIVATION_METHODS:
        return True
    needs = set(criterion_class.needs)
    if "calibration" in needs:
        why = "it solves for single weights and updates the kept ones, it does not score units"
    elif "data" in needs:
        why = "it needs a loss on labelled data, which a language-model folder does not give"
    elif needs - {"weights"} or criterion_class.chooses_mask:
        why = "it needs the model's graph on an input shape, which the block runner does not run"
    else:
        return False
    raise Unsupported(
        f"--method {name} does not score the {granularity}s of a Hugging Face folder: {why}",
        "use --method magnitude or random, or --method wanda with --data corpus.txt",
    )


def plan_structured_hf(
    source: str,
    criterion_class: type[Criterion],
    granularity: str,
    settings: PruneSettings,
    options: Mapping[str, Any],
    round_to: int | None,
    reconstruct: bool,
    data: str | None,
    trust_remote_code: bool = False,
) -> StructuredHFPlan:
    """Refuse what cannot run (exit 2 or 3) before any weight or data is read; the plan."""
    check_method(criterion_class, granularity)
    if settings.scope not in SCOPES:
        raise BadInput(
            f"--scope {settings.scope}: a Hugging Face folder keeps the same number of "
            f"{granularity}s in every block (config.json holds one width)",
            "drop --scope",
        )
    opened = open_blocks(source, trust_remote_code, f"--granularity {granularity}")
    config = opened.checkpoint.config or {}
    shapes = opened.tensors.shapes()
    prefixes = [opened.blocks.name(i) for i in range(len(opened.blocks))]
    groups = transformer_groups(shapes, prefixes, config, granularity)
    names = block_linears(shapes, prefixes)
    keep, achieved = uniform_keep(groups, shapes, names, settings.sparsity, round_to)
    new_shapes = {}
    for group in groups:
        for piece in group.slices:
            shape = list(shapes[piece.tensor])
            shape[piece.dim] = keep * piece.block
            new_shapes[piece.tensor] = tuple(shape)
    samples = seq_len = None
    if data:
        samples = options.get("samples") or CALIBRATION_OPTIONS["samples"]
        seq_len = check_sizes(samples, options.get("seq_len"), max_positions(config))
        width = config.get("hidden_size")
        check_activations(samples, seq_len, width if type(width) is int else None)
    return StructuredHFPlan(
        opened, criterion_class.name, granularity, settings, groups, keep, achieved, names,
        new_shapes, shrunk_config(config, granularity, groups[0], keep, shapes), round_to,
        reconstruct and bool(data), samples, seq_len,
    )  # fmt: skip


def structured_hf_to_file(
    plan: StructuredHFPlan,
    criterion: Criterion,
    data: str | None,
    output: str,
    device: str = "cpu",
    progress: Callable[[int, int, str], None] | None = None,
    trust_remote_code: bool = False,
) -> Report:
    """Cut every block of ``plan`` and write the smaller folder ``output`` (atomically); the
    report on what was written."""
    started = time.perf_counter()
    checkpoint = plan.opened.checkpoint
    cutter = BlockCutter(
        plan.groups,
        plan.keep,
        criterion,
        plan.settings.seed,
        activations=plan.method in ACTIVATION_METHODS,
        reconstruct=plan.reconstruct,
    )
    lazy = lazy_model(checkpoint)
    before = input_cost(lazy, None, trust_remote_code)
    extra = _metadata(plan)
    extra.update(original_metadata(lazy, before))
    calibration = None
    if data:
        assert plan.samples is not None
        calibration = load_calibration(
            data, Path(checkpoint.source), checkpoint.config or {}, plan.samples,
            plan.seq_len, plan.settings.seed, trust_remote_code,
        )  # fmt: skip
        written = prune_blocks(
            plan.opened, calibration.input_ids, cutter, output, device=device, progress=progress,
            extra=extra, trust_remote_code=trust_remote_code, shapes=plan.shapes,
            config=plan.config,
        )["written"]  # fmt: skip
    else:
        written = _cut_without_data(plan, cutter, output, extra, progress)
    written_checkpoint = open_checkpoint(output)
    weights = [name for name in plan.names if name.endswith(".weight")]
    report = stream_inspect(written_checkpoint, weights)
    report.command = "prune"
    report.model = model_summary(lazy)
    add_cost(report, lazy_model(written_checkpoint), None, before, trust_remote_code)
    report.pruning = _pruning(plan, calibration)
    report.structure = _structure(plan, cutter)
    report.seconds = time.perf_counter() - started
    report.output = {
        "path": output,
        "format": "safetensors-folder",
        "file_bytes": written,
        "layout": "dense",
    }
    return report


def _cut_without_data(
    plan: StructuredHFPlan,
    cutter: BlockCutter,
    output: str,
    extra: dict[str, Any],
    progress: Callable[[int, int, str], None] | None,
) -> int:
    """One block's tensors read, cut and written at a time; the rest copied."""
    tensors = plan.opened.tensors
    with atomic_folder(output) as staging:
        writer = FolderWriter(plan.opened.checkpoint, staging, extra, plan.shapes, plan.config)
        try:
            for index, group in enumerate(plan.groups):
                names = [name for name in cutter.wanted(group) if name in tensors]
                new = cutter.cut(index, {name: tensors.read(name) for name in names})
                for name, tensor in new.items():
                    writer.write(name, tensor)
                if progress is not None:
                    progress(index + 1, len(plan.groups), plan.opened.blocks.name(index))
            written = writer.finish()
        finally:
            writer.close()
    return written


def _metadata(plan: StructuredHFPlan) -> dict[str, Any]:
    """The ``prunecli.*`` keys of the output's shards."""
    settings = plan.settings
    extra: dict[str, Any] = {
        "method": plan.method,
        "sparsity.target": repr(settings.sparsity),
        "scope": "layer",
        "iterations": "1",
        "seed": str(settings.seed),
        "granularity": plan.granularity,
        "structure.removed": repr(plan.achieved),
        "structure.kept": str(plan.keep),
        "reconstructed": "true" if plan.reconstruct else "false",
    }
    if plan.round_to is not None:
        extra["round_to"] = str(plan.round_to)
    if plan.samples is not None:
        extra.update({"samples": str(plan.samples), "seq_len": str(plan.seq_len)})
    return extra


def _pruning(plan: StructuredHFPlan, calibration: Any) -> dict[str, Any]:  # noqa: ANN401
    pruning: dict[str, Any] = {
        "method": plan.method,
        "target_sparsity": plan.settings.sparsity,
        "achieved_sparsity": plan.achieved,
        "scope": "layer",
        "iterations": 1,
        "seed": plan.settings.seed,
        "granularity": plan.granularity,
    }
    if calibration is not None:
        pruning.update(
            samples=plan.samples, seq_len=plan.seq_len, calibration_tokens=calibration.tokens
        )
    return pruning


def _structure(plan: StructuredHFPlan, cutter: BlockCutter) -> dict[str, Any]:
    return {
        "granularity": plan.granularity,
        "groups": [
            {
                "name": group.name,
                "kind": group.kind,
                "label": group.label,
                "before": group.size,
                "after": plan.keep,
            }
            for group in plan.groups
        ],
        "reconstructed": list(cutter.refit),
        "round_to": plan.round_to,
        "target_params": round(plan.settings.sparsity * plan.linear_params),
        "removed_params": plan.removed_params,
    }


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total
