"""CI gates for `inspect`: each returns a Check that the report shows and the exit code follows."""

from __future__ import annotations

from prunecli.core.pruning import parse_sparsity
from prunecli.core.report import Check, Report


def min_sparsity_check(report: Report, threshold_text: str) -> Check:
    threshold = parse_sparsity(threshold_text, "--min-sparsity")
    value = report.sparsity
    passed = value >= threshold
    relation = "meets" if passed else "is below"
    message = f"prunable sparsity {value:.4%} {relation} --min-sparsity {threshold:.4%}"
    return Check("min-sparsity", threshold, value, passed, message)
