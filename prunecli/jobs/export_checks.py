"""The checks of `export` (docs/export.md), run on a staged artifact before it lands:

- **parity**: the artifact and the source module run on the same seeded random inputs;
  ``max |artifact − module| / max(1, max |module|)`` over every output element must be at most
  ``atol`` (an absolute tolerance for outputs up to 1 in size, relative above that);
- **zeros**: every zero of a prunable weight is still a zero in the artifact (BatchNorm folding
  scales a convolution's output channels, which keeps zeros).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prunecli.jobs.export_formats import Artifact, ExportSettings, run_module
from prunecli.jobs.export_shapes import parity_inputs
from prunecli.jobs.report import Check
from prunecli.models.loaded import LoadedModel


@dataclass
class Parity:
    max_abs_diff: float
    reference_max: float  # max |reference output|
    atol: float
    samples: int
    seed: int
    shapes: list[tuple[int, ...]] = field(default_factory=list)  # the input shapes run

    @property
    def output_scale(self) -> float:
        return max(1.0, self.reference_max)

    @property
    def relative(self) -> float:
        return self.max_abs_diff / self.output_scale

    @property
    def passed(self) -> bool:
        return self.relative <= self.atol

    def to_json(self) -> dict[str, Any]:
        finite = math.isfinite(self.max_abs_diff)
        return {
            "max_abs_diff": self.max_abs_diff if finite else None,
            "reference_max": self.reference_max,
            "output_scale": self.output_scale,
            "relative": self.relative if finite else None,
            "atol": self.atol,
            "passed": self.passed,
            "samples": self.samples,
            "seed": self.seed,
            "input_shapes": [list(shape) for shape in self.shapes],
        }


def measure_parity(model: LoadedModel, artifact: Artifact, settings: ExportSettings) -> Parity:
    """max |artifact − module| and the output scale over seeded random inputs, at several
    batch sizes (and sequence lengths) where the artifact leaves them free."""
    module = model.require_graph("export verification")
    assert artifact.run is not None and artifact.spec is not None
    inputs = parity_inputs(artifact.spec, artifact.axes, settings.samples, settings.seed)
    worst, largest = 0.0, 0.0
    for x, outputs in zip(inputs, artifact.run(inputs), strict=True):
        expected = [torch.as_tensor(y).double() for y in run_module(module, x)]
        got = [torch.as_tensor(np.asarray(y)).double() for y in outputs]
        if len(got) != len(expected) or any(
            a.shape != b.shape for a, b in zip(got, expected, strict=False)
        ):
            worst = math.inf
            continue
        for a, b in zip(got, expected, strict=True):
            if a.numel():
                diff = float((a - b).abs().max())
                worst = max(worst, diff if math.isfinite(diff) else math.inf)
                largest = max(largest, float(b.abs().max()))
    shapes = sorted({tuple(x.shape) for x in inputs})
    return Parity(worst, largest, settings.atol, len(inputs), settings.seed, shapes)


def zero_mask(value: Any) -> np.ndarray:
    """Where ``value`` (a torch tensor or NumPy array, any dtype) is zero."""
    if isinstance(value, torch.Tensor):
        return (value.detach() == 0).cpu().numpy()
    return np.asarray(value) == 0


def zero_check(
    model: LoadedModel, names: Sequence[str], exported: Mapping[str, Any]
) -> dict[str, Any]:
    """Zeros of the prunable weights in the source and in the artifact (same-named tensors)."""
    source_zeros = exported_zeros = compared = 0
    lost: list[str] = []
    unmatched: list[str] = []
    for name in names:
        source = zero_mask(model.tensors[name])
        target = zero_mask(exported[name]) if name in exported else None
        if target is None or target.size != source.size:
            unmatched.append(name)
            continue
        compared += source.size
        source_zeros += int(source.sum())
        exported_zeros += int(target.sum())
        if target.shape == source.shape:
            kept = not np.any(source & ~target)
        else:  # the exporter stored it transposed or reshaped: compare counts
            kept = int(target.sum()) >= int(source.sum())
        if not kept:
            lost.append(name)
    return {
        "weights": compared,
        "source_zeros": source_zeros,
        "exported_zeros": exported_zeros,
        "source_sparsity": source_zeros / compared if compared else 0.0,
        "exported_sparsity": exported_zeros / compared if compared else 0.0,
        "zeros_preserved": not lost,
        "lost_in": lost,
        "unmatched": unmatched,
    }


def zeros_check(zeros: Mapping[str, Any]) -> Check:
    lost = zeros["lost_in"]
    message = (
        f"{zeros['source_zeros']:,} zeros in the prunable weights, "
        f"{zeros['exported_zeros']:,} in the artifact"
        if not lost
        else f"zeros became non-zero in {len(lost)} tensors, e.g. {lost[0]!r}"
    )
    return Check("zeros", 0, len(lost), not lost, message)


def parity_check(parity: Parity) -> Check:
    figure = "inf" if not math.isfinite(parity.max_abs_diff) else f"{parity.relative:.3g}"
    message = (
        f"max |diff| {parity.max_abs_diff:.3g} / output scale {parity.output_scale:.3g} = "
        f"{figure} {'<=' if parity.passed else '>'} atol {parity.atol:g} "
        f"({parity.samples} random inputs{batches_text(parity.shapes)}, seed {parity.seed})"
    )
    if not parity.passed:
        message += "; nothing was written"
    value = parity.relative if math.isfinite(parity.relative) else None  # JSON has no inf
    return Check("parity", parity.atol, value, parity.passed, message)


def batches_text(shapes: list[tuple[int, ...]]) -> str:
    """`` of batch 1-4``, `` of batch 1-4 and length 4, 8``: what the parity inputs varied."""
    batches = sorted({shape[0] for shape in shapes})
    if not batches:
        return ""
    text = f" of batch {batches[0]}" + (f"-{batches[-1]}" if len(batches) > 1 else "")
    lengths = sorted({shape[1] for shape in shapes if len(shape) > 1})
    if len(lengths) > 1:
        text += f" and length {', '.join(map(str, lengths))}"
    return text
