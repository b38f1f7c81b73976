"""CI gates for `inspect`: each returns a Check that the report shows and the exit code follows."""

from __future__ import annotations

from prunecli.core.pruning import parse_sparsity
from prunecli.core.report import Check, Report
from prunecli.errors import BadInput, Unsupported


def min_sparsity_check(report: Report, threshold_text: str) -> Check:
    threshold = parse_sparsity(threshold_text, "--min-sparsity")
    value = report.sparsity
    passed = value >= threshold
    relation = "meets" if passed else "is below"
    message = f"prunable sparsity {value:.4%} {relation} --min-sparsity {threshold:.4%}"
    return Check("min-sparsity", threshold, value, passed, message)


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
