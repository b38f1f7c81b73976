"""`prunecli prune ./folder/ --granularity neuron|head`: the request checked for a Hugging Face
folder, then its blocks cut (jobs/structured_hf.py) with a progress bar per block, or, with
--dry-run, the plan shown: how many units every block keeps and the config.json it gets."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prunecli.errors import BadInput

if TYPE_CHECKING:
    from rich.console import Console

    from prunecli.jobs.settings import PruneSettings
    from prunecli.jobs.structured_hf import StructuredHFPlan
    from prunecli.pruning.criterion import Criterion


def run_structured_hf(
    r: Any,  # noqa: ANN401 - the PruneRequest (cli/prune_run.py)
    criterion_class: type[Criterion],
    settings: PruneSettings,
    reconstruct: bool,
    check_output: Callable[[Any, bool], str],
) -> None:
    """Check, plan (headers only), check the output, then cut and report."""
    from prunecli.cli.blocks import check_group
    from prunecli.cli.output import Output
    from prunecli.cli.prune_calibrated import refuse_flags
    from prunecli.jobs.quality import add_saved_quality, measure_saved
    from prunecli.jobs.session import check_device
    from prunecli.jobs.structured_hf import plan_structured_hf, structured_hf_to_file

    check_device(r.device)
    refused = {
        "--arch-kwargs": r.arch_kwargs,
        "--input-shape": r.input_shape,
        "--include": r.include,
        "--exclude": r.exclude,
    }
    refuse_flags(
        refused, f"--granularity {r.granularity} cuts every block of a Hugging Face folder alike"
    )
    plan = plan_structured_hf(
        r.model, criterion_class, r.granularity, settings, r.options, r.round_to,
        reconstruct, r.data, r.trust_remote_code,
    )  # fmt: skip
    if r.output == "-":
        raise BadInput(f"--granularity {r.granularity} on a folder writes a folder, not -o -")
    output = check_output(r, False)
    out = Output(r.json_mode, r.quiet, group=check_group(r.group))
    if r.dry_run:
        document = plan_document(plan, r.data)
        out.document(document, lambda console: render_structured_plan(console, document))
        return
    baseline = measure_saved(r.model, r.eval_data, "prune", r.device, r.trust_remote_code)
    label = f"pruning {r.granularity}s ({plan.method})"
    with out.progress(label, len(plan.groups), force=r.progress) as tick:
        report = structured_hf_to_file(
            plan,
            criterion_class(),
            r.data,
            output,
            r.device,
            lambda done, total, name: tick(done, total, {"label": name}),
            r.trust_remote_code,
        )
    add_saved_quality(report, output, baseline)
    out.report(report, r.report_file)


def plan_document(plan: StructuredHFPlan, data: str | None) -> dict[str, Any]:
    """What ``--dry-run`` shows: every dry run's tensors, then the units kept and the config."""
    from prunecli.jobs.prune import plan_document as tensors_plan
    from prunecli.jobs.stream import lazy_model

    lazy = lazy_model(plan.opened.checkpoint)
    weights = [name for name in plan.names if name.endswith(".weight")]
    document = tensors_plan(lazy, weights, plan.method, plan.settings, False)
    document["scope"] = "layer"
    first = plan.groups[0]
    document["structure"] = {
        "granularity": plan.granularity,
        "groups": [
            {"name": g.name, "kind": g.kind, "label": g.label, "before": g.size, "after": plan.keep}
            for g in plan.groups
        ],
        "reconstructed": [c for g in plan.groups for c in g.consumers] if plan.reconstruct else [],
        "round_to": plan.round_to,
        "target_params": round(plan.settings.sparsity * plan.linear_params),
        "removed_params": plan.removed_params,
        "achieved_sparsity": plan.achieved,
        "config": {
            key: value
            for key, value in plan.config.items()
            if (plan.opened.checkpoint.config or {}).get(key) != value
        },
        "units": f"{first.size} → {plan.keep} {first.kind}s per block",
    }
    document["data"] = data
    return document


def render_structured_plan(console: Console, document: dict[str, Any]) -> None:
    from prunecli.cli.output import render_plan
    from prunecli.cli.training_view import structure_table

    render_plan(console, document)
    structure = document["structure"]
    console.print(structure_table(structure))
    changes = ", ".join(f"{key} {value}" for key, value in structure["config"].items())
    console.print(
        f"{structure['units']}: {structure['achieved_sparsity']:.2%} of the blocks' linear-layer "
        f"parameters removed; config.json: {changes or 'unchanged'}"
    )
