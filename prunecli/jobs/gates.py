"""CI gates for `inspect`: each returns a Check that the report shows and the exit code follows."""

from __future__ import annotations

from prunecli.errors import BadInput, Unsupported
from prunecli.jobs.report import Check, Report
from prunecli.pruning.allocation import prune_count
from prunecli.pruning.loop import parse_sparsity


def min_sparsity_check(report: Report, threshold_text: str) -> Check:
    """At least ``round(S · N)`` of the N prunable weights are zero: the count `prune -s S`
    zeroes (allocation.prune_count), compared as integers. Comparing fractions instead fails a
    model pruned to exactly S whenever S · N is not whole (0.95 of 832: 790 zeros, 94.95%)."""
    threshold = parse_sparsity(threshold_text, "--min-sparsity")
    total, zeros = report.prunable_params, report.prunable_params - report.prunable_nonzero
    needed = prune_count(threshold, total)
    passed = zeros >= needed if total else threshold == 0  # no weight: sparsity 0, as reported
    relation = "meets" if passed else "is below"
    message = (
        f"prunable sparsity {report.sparsity:.4%} {relation} --min-sparsity {threshold:.4%}: "
        f"{zeros:,} of {total:,} weights are zero, {needed:,} needed"
    )
    return Check("min-sparsity", threshold, report.sparsity, passed, message)


def max_collapsed_check(report: Report, limit: int) -> Check:
    """At most ``limit`` collapsed layers (DESIGN §4); needs the topology, hence the graph."""
    if limit < 0:
        raise BadInput(f"--max-collapsed {limit} is negative", "pass 0 or more")
    if report.topology is None:
        reason = report.topology_error or "the model's architecture is unknown"
        raise Unsupported(
            f"--max-collapsed needs the model's topology, and {reason}",
            "pass --arch NAME (or --arch pkg.module:factory) and, if it has none, --input-shape",
        )
    collapsed = report.topology.collapsed_layers
    passed = len(collapsed) <= limit
    which = (
        f" ({', '.join(collapsed[:3])}{', …' if len(collapsed) > 3 else ''})" if collapsed else ""
    )
    relation = "within" if passed else "exceeds"
    plural = "layer" if len(collapsed) == 1 else "layers"
    message = f"{len(collapsed)} collapsed {plural}{which} {relation} --max-collapsed {limit}"
    return Check("max-collapsed", limit, len(collapsed), passed, message)
