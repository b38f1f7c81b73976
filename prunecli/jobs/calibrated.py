"""`prune --method wanda|sparsegpt`: a Hugging Face folder pruned block by block from
calibration text (calibration/runner.py), in memory bounded by one block plus the activations.

:func:`plan_calibrated` checks everything that can be checked before any data is read (the
folder, its blocks, the scope, the pattern against every layer, the window sizes);
:func:`calibrated_prune_to_file` then loads the windows, runs the block runner with the method's
pruner and reports on the written folder (counted from its files).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prunecli.calibration.blocks import OnlyLayers, linears, weight_matrix
from prunecli.calibration.data import (
    check_activations,
    check_data,
    check_sizes,
    load_calibration,
    max_positions,
)
from prunecli.calibration.owl import DEFAULT_LAMBDA, DEFAULT_M, owl_plan
from prunecli.calibration.runner import BlockModel, open_blocks, prune_blocks
from prunecli.calibration.stats import NonFiniteInput
from prunecli.criteria.sparsegpt import DEFAULT_DAMPENING, SparseGPTPruner
from prunecli.criteria.wanda import CALIBRATION_OPTIONS, WandaPruner
from prunecli.errors import BadInput, Unsupported
from prunecli.io.checkpoint import open_checkpoint
from prunecli.jobs.calibrated_select import choose_linears
from prunecli.jobs.cost import add_cost, input_cost, original_metadata
from prunecli.jobs.prune import plan_document
from prunecli.jobs.report import Report, model_summary
from prunecli.jobs.settings import PruneSettings
from prunecli.jobs.stream import lazy_model, stream_inspect
from prunecli.structure.nm import check_shapes

#: the scope each method reports, and the --scope values that ask for it (global: the default;
#: owl: a sparsity per block from a first pass, calibration/owl.py)
SCOPES = {
    "wanda": ("row", ("global", "row", "owl")),
    "sparsegpt": ("layer", ("global", "layer", "owl")),
}


@dataclass(frozen=True)
class CalibratedPlan:
    """What a calibrated run prunes and how, checked before any data is read."""

    source: str
    opened: BlockModel  # the folder, its tensors and blocks, as the runner takes them
    method: str
    settings: PruneSettings
    names: list[
        str
    ]  # the pruned weights: linear layers inside the blocks (--include/--exclude), module order
    blocks: int
    samples: int
    seq_len: int
    dampening: float | None  # sparsegpt only
    owl: tuple[float, float] | None = None  # (λ, M) with --scope owl

    @property
    def scope(self) -> str:
        return "owl" if self.owl is not None else SCOPES[self.method][0]


def plan_calibrated(
    source: str,
    method: str,
    settings: PruneSettings,
    options: Mapping[str, Any],
    trust_remote_code: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> CalibratedPlan:
    """Refuse what cannot run (exit 2 or 3) before any data is read; the plan. ``include`` /
    ``exclude`` choose among the linear layers inside the blocks (jobs/calibrated_select.py)."""
    scope, allowed = SCOPES[method]
    if settings.scope not in allowed:
        raise BadInput(
            f"--method {method} compares weights within each {scope}; "
            f"--scope {settings.scope} does not apply",
            f"drop --scope{' or pass --scope row' if method == 'wanda' else ''}",
        )
    if settings.iterations not in (None, 1):
        raise BadInput(f"--method {method} prunes in one pass; drop --iterations")
    opened = open_blocks(source, trust_remote_code, f"--method {method}")
    checkpoint, tensors, blocks = opened.checkpoint, opened.tensors, opened.blocks
    samples = options.get("samples")
    samples = CALIBRATION_OPTIONS["samples"] if samples is None else samples
    seq_len = check_sizes(samples, options.get("seq_len"), max_positions(checkpoint.config))
    width = getattr(getattr(blocks.model, "config", None), "hidden_size", None)
    check_activations(samples, seq_len, width if type(width) is int else None)
    dampening = None
    if method == "sparsegpt":
        dampening = options.get("dampening")
        dampening = DEFAULT_DAMPENING if dampening is None else float(dampening)
        if not math.isfinite(dampening) or dampening < 0:
            raise BadInput(f"--dampening must be a finite number >= 0, got {dampening}")
    owl = owl_options(settings.scope, options)
    shapes: dict[str, tuple[int, ...]] = {}
    for index, layer in enumerate(blocks.layers):
        for name, module in linears(layer, blocks.name(index)).items():
            if f"{name}.weight" in tensors:
                shapes[f"{name}.weight"] = tuple(weight_matrix(module).shape)
    if not shapes:
        raise Unsupported(f"{source}: its blocks hold no linear layers to prune")
    if include or exclude:
        lazy = lazy_model(checkpoint)
        chosen = choose_linears(lazy, list(shapes), method, blocks.prefix, include, exclude)
        shapes = {name: shapes[name] for name in chosen}
    if settings.pattern is not None:
        check_shapes(shapes, settings.pattern)
    plan = CalibratedPlan(
        source, opened, method, settings, list(shapes), len(blocks), samples, seq_len, dampening
    )
    return replace(plan, owl=owl)


def owl_options(scope: str, options: Mapping[str, Any]) -> tuple[float, float] | None:
    """OWL's (λ, M) with --scope owl, checked; None otherwise (--owl-lambda/--owl-m refused)."""
    given = {name: options.get(name) for name in ("owl_lambda", "owl_m")}
    if scope != "owl":
        for name, value in given.items():
            if value is not None:
                flag = "--" + name.replace("_", "-")
                raise BadInput(f"{flag} applies to --scope owl", f"pass --scope owl or drop {flag}")
        return None
    lam = DEFAULT_LAMBDA if given["owl_lambda"] is None else float(given["owl_lambda"])
    m = DEFAULT_M if given["owl_m"] is None else float(given["owl_m"])
    if not math.isfinite(lam) or lam < 0:
        raise BadInput(f"--owl-lambda must be a finite number >= 0, got {lam:g}")
    if not math.isfinite(m) or m <= 0:
        raise BadInput(f"--owl-m must be a finite number > 0, got {m:g}")
    return lam, m


def calibrated_prune_to_file(
    plan: CalibratedPlan,
    data: str,
    output: str,
    device: str = "cpu",
    progress: Callable[[int, int, str], None] | None = None,
    trust_remote_code: bool = False,
) -> Report:
    """Load the calibration windows, prune ``plan.source`` block by block into the folder
    ``output`` (written atomically) and report on what was written."""
    started = time.perf_counter()
    settings = plan.settings
    calibration = load_calibration(
        data,
        Path(plan.source),
        plan.opened.checkpoint.config or {},
        plan.samples,
        plan.seq_len,
        settings.seed,
        trust_remote_code,
    )
    sparsity: float | list[float] = settings.sparsity
    owl: dict[str, Any] = {}
    if plan.owl is not None:
        sparsity, owl = _owl_pass(plan, calibration.input_ids, device, progress)
        progress = _second_pass(progress, plan.blocks)
    if plan.method == "wanda":
        pruner: Any = WandaPruner(sparsity, settings.pattern)
    else:
        pruner = SparseGPTPruner(sparsity, settings.pattern, plan.dampening or 0.0)
    pruning: dict[str, Any] = {
        "method": plan.method,
        "target_sparsity": settings.sparsity,
        "scope": plan.scope,
        "iterations": 1,
        "seed": settings.seed,
        "samples": plan.samples,
        "seq_len": plan.seq_len,
        "calibration_tokens": calibration.tokens,
    }
    extra: dict[str, Any] = {
        "method": plan.method,
        "sparsity.target": repr(settings.sparsity),
        "scope": plan.scope,
        "iterations": "1",
        "seed": str(settings.seed),
        "samples": str(plan.samples),
        "seq_len": str(plan.seq_len),
        "prunable": plan.names,
    }
    if settings.pattern is not None:
        pruning["pattern"] = extra["pattern"] = str(settings.pattern)
    if plan.dampening is not None:
        pruning["dampening"] = plan.dampening
        extra["dampening"] = repr(plan.dampening)
    pruning.update(owl)
    extra.update({k: repr(v) if isinstance(v, float) else v for k, v in owl.items()})
    lazy = lazy_model(plan.opened.checkpoint)
    before = input_cost(lazy, None, trust_remote_code)
    extra.update(original_metadata(lazy, before))
    try:
        result = prune_blocks(
            plan.opened,
            calibration.input_ids,
            OnlyLayers(pruner, plan.names),
            output,
            device=device,
            progress=progress,
            extra=extra,
            trust_remote_code=trust_remote_code,
        )
    except NonFiniteInput as error:
        raise _non_finite(error) from None
    report = stream_inspect(open_checkpoint(output), plan.names)
    report.command = "prune"
    report.model = model_summary(lazy)
    add_cost(report, lazy, None, before, shapes_kept=True)  # the blocks keep their shapes
    pruning["achieved_sparsity"] = report.sparsity
    report.pruning = pruning
    report.seconds = time.perf_counter() - started
    report.output = {
        "path": output,
        "format": "safetensors-folder",
        "file_bytes": result["written"],
        "layout": "dense",
    }
    return report


def _owl_pass(
    plan: CalibratedPlan,
    input_ids: Any,
    device: str,
    progress: Callable[[int, int, str], None] | None,
) -> tuple[list[float], dict[str, Any]]:
    """OWL's first pass over the dense folder: the per-block sparsities and what the report and
    the metadata say of them (λ, M, each block's outlier ratio and sparsity)."""
    assert plan.owl is not None
    lam, m = plan.owl
    names = [plan.opened.blocks.name(i) for i in range(plan.blocks)]

    def first(done: int, _: int, name: str) -> None:
        if progress is not None:
            progress(done, 2 * plan.blocks, f"owl outliers (dense) {name}")

    try:
        ratios, sparsities = owl_plan(
            plan.opened, input_ids, plan.settings.sparsity, lam, m,
            device=device, progress=first, weights=plan.names,
        )  # fmt: skip
    except NonFiniteInput as error:
        raise _non_finite(error) from None
    return sparsities, {
        "owl_lambda": lam,
        "owl_m": m,
        "outlier_ratio": dict(zip(names, ratios, strict=True)),
        "block_sparsity": dict(zip(names, sparsities, strict=True)),
    }


def _second_pass(
    progress: Callable[[int, int, str], None] | None, blocks: int
) -> Callable[[int, int, str], None] | None:
    """The pruning pass's progress after OWL's first pass, on the same bar of 2 × blocks."""
    if progress is None:
        return None
    return lambda done, _, name: progress(blocks + done, 2 * blocks, f"pruning {name}")


def _non_finite(error: NonFiniteInput) -> BadInput:
    """A layer's non-finite inputs, said of its block."""
    return BadInput(
        f"block {_block_of(error.layer)} gives NaN or infinite activations on the "
        f"calibration data (the inputs of {error.layer})",
        "check the model's weights and the calibration text",
    )


def _block_of(layer: str | None) -> str:
    """``model.layers.3.mlp.up_proj`` → ``model.layers.3`` (the block a layer sits in)."""
    found = re.match(r"(.+?\.\d+)(\.|$)", layer or "")
    return found.group(1) if found else str(layer)


def calibrated_plan_document(plan: CalibratedPlan, data: str) -> dict[str, object]:
    """What ``prune --method wanda|sparsegpt --dry-run`` shows: the weights that would be pruned
    and those left dense (as every dry run), and the calibration settings. ``data`` is checked
    as far as it can be without reading it (calibration/data.py ``check_data``)."""
    check_data(data, Path(plan.source))
    lazy = lazy_model(plan.opened.checkpoint)
    document = plan_document(lazy, plan.names, plan.method, plan.settings, False)
    document["scope"] = plan.scope
    calibration: dict[str, object] = {
        "data": data,
        "samples": plan.samples,
        "seq_len": plan.seq_len,
        "seed": plan.settings.seed,
        "blocks": plan.blocks,
        "block_list": plan.opened.blocks.prefix,
    }
    if plan.dampening is not None:
        calibration["dampening"] = plan.dampening
    document["calibration"] = calibration
    return document
