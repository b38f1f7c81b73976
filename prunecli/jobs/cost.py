"""Cost in every report: parameters and MACs (structure/cost.py), with the ratio to the original.

``prune`` counts its input before it prunes and its output after, and writes the original's
counts into the output's metadata (``prunecli.params.original``, ``prunecli.macs.original``
with the input they were counted for, ``prunecli.macs.input``), carried unchanged through later
prunes; ``inspect`` shows the ratio to them. A model whose graph is unknown (weights only, ONNX)
has no MAC count: ``null`` with a note saying why, never a guess.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prunecli.calibration.data import max_positions
from prunecli.errors import PrunecliError
from prunecli.jobs.report import Report
from prunecli.models.loaded import LoadedModel
from prunecli.structure.cost import CostUnknown, count_macs, example_input, token_count

META_PARAMS_ORIGINAL = "prunecli.params.original"
META_MACS_ORIGINAL = "prunecli.macs.original"
META_MACS_INPUT = "prunecli.macs.input"


@dataclass(frozen=True)
class Macs:
    value: int | None  # None: not counted, ``note`` says why
    input: list[int] | None  # the input counted for, batch 1 first
    note: str | None = None


def measure_macs(
    model: LoadedModel, input_shape: Sequence[int] | None = None, trust_remote_code: bool = False
) -> Macs:
    """The MACs of one forward pass of ``model`` on a batch of one: ``input_shape`` (without the
    batch), else the architecture's; a Hugging Face model on ``token_count`` tokens."""
    module = model.module
    tokens = model.hf_config is not None
    if module is None and tokens and model.checkpoint is not None:
        module, why = _skeleton(model, trust_remote_code)
        if module is None:
            return Macs(None, None, why)
    if module is None:
        return Macs(None, None, _unknown_graph(model))
    try:
        if tokens:
            limit = max_positions(model.hf_config or {})
            shape: Sequence[int] | None = (token_count(limit, input_shape),)
        else:
            shape = input_shape or (model.arch.input_shape if model.arch else None)
        if shape is None:
            return Macs(None, None, "the model's input shape is unknown: pass --input-shape")
        return Macs(_float_or_ids(module, shape, tokens), [1, *shape])
    except CostUnknown as exc:
        return Macs(None, None, f"the forward pass could not be counted ({exc})")


def _float_or_ids(module: Any, shape: Sequence[int], tokens: bool) -> int:
    """Float samples, else token ids: a module that takes indices (an embedding first) fits a
    shape as well (as ``check_input_shape`` tries them)."""
    try:
        return count_macs(module, example_input(module, shape, tokens))
    except CostUnknown:
        if tokens:
            raise
        try:
            return count_macs(module, example_input(module, shape, tokens=True))
        except CostUnknown:
            pass
        raise


def input_cost(
    model: LoadedModel, input_shape: Sequence[int] | None = None, trust_remote_code: bool = False
) -> dict[str, Any]:
    """What ``prune`` records of its input before it changes anything: the values stored and
    the MACs (``before`` of :func:`add_cost`, and :func:`original_metadata`)."""
    macs = measure_macs(model, input_shape, trust_remote_code)
    params = sum(tensor.numel() for tensor in model.tensors.values())
    return {
        "params": params,
        "macs": macs.value,
        "macs_input": macs.input,
        "macs_note": macs.note,
    }


def cost_of(report: Report, macs: Macs) -> dict[str, Any]:
    """The cost object of the report's model: stored values (``all_params``) and MACs."""
    return {
        "params": report.all_params,
        "nonzero": report.all_nonzero,
        "macs": macs.value,
        "macs_input": macs.input,
        "macs_note": macs.note,
    }


def add_cost(
    report: Report,
    model: LoadedModel,
    input_shape: Sequence[int] | None = None,
    before: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    shapes_kept: bool = False,
) -> None:
    """Set ``report.cost``: the model's params and MACs, and their ratios to ``before`` (the
    input of ``prune``) or to the original recorded in the model's metadata. ``shapes_kept``:
    the model has exactly the shapes ``before`` was counted on (a streamed prune writes the
    input's tensors back), so its MACs are taken from there instead of counted again."""
    if shapes_kept and before is not None:
        macs = Macs(before["macs"], before["macs_input"], before["macs_note"])
    else:
        macs = measure_macs(model, input_shape, trust_remote_code)
    cost = cost_of(report, macs)
    if before is not None:
        original = {
            "params": before["params"],
            "macs": before["macs"],
            "macs_input": before["macs_input"],
            "source": "input",
        }
    else:
        original = recorded_original(model.metadata, report.warnings)
    cost["original"] = original
    cost["params_ratio"] = _ratio(cost["params"], original and original["params"])
    same_input = original is not None and original["macs_input"] == cost["macs_input"]
    cost["macs_ratio"] = _ratio(cost["macs"], original["macs"]) if same_input else None
    report.cost = cost


def original_metadata(model: LoadedModel, before: dict[str, Any]) -> dict[str, str]:
    """What ``prune`` adds to its output's metadata (keys without ``prunecli.``): the input's
    counts, unless the input already records an original (then that one is carried)."""
    if META_PARAMS_ORIGINAL in model.metadata:
        return {}
    extra = {"params.original": str(before["params"])}
    if before["macs"] is not None:
        extra["macs.original"] = str(before["macs"])
        extra["macs.input"] = json.dumps(before["macs_input"])
    return extra


def recorded_original(metadata: dict[str, str], warnings: list[str]) -> dict[str, Any] | None:
    """The original's counts from ``metadata``; None when none are recorded (or unreadable,
    with a warning: the ratio is left out, the rest of the report stands)."""
    if META_PARAMS_ORIGINAL not in metadata:
        return None
    try:
        params = _count(metadata[META_PARAMS_ORIGINAL])
        macs = _count(metadata[META_MACS_ORIGINAL]) if META_MACS_ORIGINAL in metadata else None
        shape = json.loads(metadata[META_MACS_INPUT]) if macs is not None else None
        if macs is not None and not (
            isinstance(shape, list) and all(type(d) is int and d > 0 for d in shape)
        ):
            raise ValueError(META_MACS_INPUT)
    except (ValueError, KeyError, json.JSONDecodeError):
        warnings.append("the metadata's record of the original's size is unreadable; no ratio")
        return None
    return {"params": params, "macs": macs, "macs_input": shape, "source": "metadata"}


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _ratio(value: int | None, reference: int | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def _skeleton(model: LoadedModel, trust_remote_code: bool) -> tuple[Any, str | None]:
    """The Hugging Face folder's module on the meta device, built from its config.json alone
    (a streamed `inspect` reads no weights); or None and why not."""
    from pathlib import Path

    from prunecli.models import hf

    if not hf.transformers_available():
        return None, "the architecture needs transformers, which is not installed"
    folder = model.checkpoint.folder if model.checkpoint is not None else None
    if folder is None:
        return None, _unknown_graph(model)
    stored = {name: tuple(tensor.shape) for name, tensor in model.tensors.items()}
    try:
        return hf.build_skeleton(Path(folder), stored, trust_remote_code, meta_only=True), None
    except PrunecliError as exc:
        return None, exc.message


def _unknown_graph(model: LoadedModel) -> str:
    if model.format == "onnx":
        return "an ONNX graph is not counted; count the PyTorch model it was exported from"
    if model.remote_code:
        return "config.json names the folder's own code, which runs only with --trust-remote-code"
    if model.arch_hint:
        return f"the file names {model.arch_hint!r}, which is imported only with --arch"
    return "the file holds weights only: its architecture is unknown"
