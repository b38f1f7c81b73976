"""CI gates for `inspect`: each returns a Check that the report shows and the exit code follows."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from prunecli.errors import BadInput, Unsupported
from prunecli.jobs.report import Check, Report
from prunecli.pruning.allocation import prune_count
from prunecli.pruning.loop import parse_sparsity
from prunecli.structure.nm import compliance, parse_pattern


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


def pattern_check(report: Report, text: str, tensor: Callable[[str], torch.Tensor]) -> Check:
    """Every group of M of every prunable layer holds at most N non-zeros; ``tensor(name)``
    gives a layer's weights, one at a time. A layer whose rows are not a multiple of M cannot be
    checked, and fails the gate (it cannot be shown to hold the pattern); ``report.pattern``
    gets the figures per layer."""
    pattern = parse_pattern(text)
    found = [compliance(layer.name, tensor(layer.name), pattern) for layer in report.layers]
    broken = [item for item in found if item.broken]
    unchecked = [item.name for item in found if not item.checkable]
    groups = sum(item.groups for item in found)
    bad = sum(item.broken for item in broken)
    report.pattern = {
        "pattern": str(pattern),
        "n": pattern.n,
        "m": pattern.m,
        "groups": groups,
        "broken": bad,
        "unchecked": unchecked,
        "layers": [item.to_json() for item in found],
    }
    passed = not broken and not unchecked
    parts = [f"{bad:,} of {groups:,} groups of {pattern.m} hold more than {pattern.n} non-zeros"]
    if broken:
        shown = ", ".join(item.name for item in broken[:3])
        parts.append(f"in {len(broken)} layers ({shown}{', …' if len(broken) > 3 else ''})")
    if unchecked:
        shown = ", ".join(unchecked[:3]) + (", …" if len(unchecked) > 3 else "")
        parts.append(f"{len(unchecked)} layers have rows not a multiple of {pattern.m}: {shown}")
    return Check("pattern", pattern.sparsity, bad, passed, "; ".join(parts))


_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_count(text: str, flag: str) -> int:
    """``300M`` → 300_000_000: a count, plain (``1500000``, ``1_500_000``) or with a decimal
    suffix k, M, G, T (``1.5G``); refused (exit 2) before anything is read."""
    cleaned = text.strip().replace("_", "").replace(",", "")
    suffix = cleaned[-1:].lower() if cleaned[-1:].isalpha() else ""
    number = cleaned[: len(cleaned) - len(suffix)]
    try:
        value = float(number) * _SUFFIXES[suffix] if number else math.nan
    except (ValueError, KeyError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise BadInput(
            f"{flag} {text!r} is not a count",
            "write a whole number, optionally with a suffix k, M, G or T, e.g. 300M or 1.5G",
        )
    return round(value)


def short_count(value: int) -> str:
    """1234567 → 1.23M: a count for people (the exact figure stays in the JSON)."""
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)


def max_params_check(report: Report, text: str) -> Check:
    """At most N values stored in the model (every tensor, as ``totals.all_params``)."""
    limit = parse_count(text, "--max-params")
    value = report.all_params
    return _at_most("max-params", "parameters", value, limit, text)


def max_macs_check(report: Report, text: str) -> Check:
    """At most N multiply-accumulates per forward pass of one sample (jobs/cost.py); needs
    the graph and its input shape."""
    limit = parse_count(text, "--max-macs")
    cost = report.cost or {}
    if cost.get("macs") is None:
        reason = cost.get("macs_note") or "the model's MACs were not counted"
        raise Unsupported(
            f"--max-macs needs the model's MACs, which were not counted: {reason}",
            "pass --arch NAME (and --input-shape if it has none)",
        )
    return _at_most("max-macs", "MACs", cost["macs"], limit, text)


def _at_most(name: str, what: str, value: int, limit: int, text: str) -> Check:
    passed = value <= limit
    relation = "within" if passed else "exceeds"
    short = f" ({short_count(value)})" if value >= 1000 else ""
    given = f" ({limit:,})" if text.strip() != str(limit) else ""
    message = f"{value:,} {what}{short} {relation} --{name} {text}{given}"
    return Check(name, limit, value, passed, message)
