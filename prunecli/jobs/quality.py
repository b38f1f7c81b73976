"""`--eval DATA` on `prune` and `retrain`: the metric `eval` would choose for the model, measured
on the input model right after loading (before anything changes it in place) and on the result,
in the report's ``quality`` block with ``before``, ``after`` and ``difference``
(docs/evaluation.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prunecli.data.sources import BUILTINS
from prunecli.errors import Unsupported
from prunecli.jobs.evaluate import EvalRequest, choose_metric, measure_quality, model_kind
from prunecli.jobs.report import Report
from prunecli.models.loaded import LoadedModel


@dataclass
class QualityBaseline:
    """The request and the figures of the input model, to compare the result with."""

    request: EvalRequest
    metric: str
    before: list[dict[str, Any]]


def eval_reads(data: str | None) -> list[tuple[str, str | None]]:
    """The ``--eval`` data file among what a command reads (a built-in data set is no file)."""
    return [("--eval", data)] if data is not None and data not in BUILTINS else []


def measure_before(
    model: LoadedModel,
    data: str | None,
    command: str,
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> QualityBaseline | None:
    """The input model's figures on ``data`` (None without ``--eval``); call it right after
    loading, before the model is pruned or trained in place."""
    if data is None:
        return None
    model.require_graph(f"{command} --eval")
    kind = model_kind(model)
    if kind == "encoder":
        raise Unsupported(
            f"{command} --eval measures accuracy (classifiers) or perplexity (causal LMs); "
            f"{model.source} is an encoder with no quality metric of its own",
            f"run `prunecli eval OUTPUT --reference {model.source} --data TEXT` after the "
            f"{command}",
        )
    request = EvalRequest(data=data, device=device, trust_remote_code=trust_remote_code)
    metric = choose_metric(kind, request)
    assert metric is not None
    return QualityBaseline(request, metric, measure_quality(model, request, metric))


def add_quality(report: Report, model: LoadedModel, baseline: QualityBaseline | None) -> None:
    """Measure the result (``model`` after the command) and put both figures in ``report``."""
    if baseline is None:
        return
    after = measure_quality(model, baseline.request, baseline.metric)
    report.quality = compare(baseline.before, after)


def measure_saved(
    path: str, data: str | None, command: str, device: str, trust_remote_code: bool
) -> QualityBaseline | None:
    """:func:`measure_before` for a run that never holds the whole model (a folder pruned block
    by block): the model at ``path`` is loaded whole for the measurement and freed after it."""
    if data is None:
        return None
    from prunecli.jobs.session import open_model

    model = open_model(path, check_weights=False, trust_remote_code=trust_remote_code)[0]
    return measure_before(model, data, command, device, trust_remote_code)


def add_saved_quality(report: Report, path: str, baseline: QualityBaseline | None) -> None:
    """:func:`add_quality` for the model a block-by-block run wrote to ``path``."""
    if baseline is None:
        return
    from prunecli.jobs.session import open_model

    trust = baseline.request.trust_remote_code
    add_quality(report, open_model(path, check_weights=False, trust_remote_code=trust)[0], baseline)


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Any]:
    """metric → the ``after`` entry (``value`` is the result's) with ``before``, ``after`` and
    ``difference`` (after − before)."""
    quality: dict[str, Any] = {}
    earlier = {entry["metric"]: entry["value"] for entry in before}
    for entry in after:
        was, now = earlier[entry["metric"]], entry["value"]
        quality[entry["metric"]] = {**entry, "before": was, "after": now, "difference": now - was}
    return quality
