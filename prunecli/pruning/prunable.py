"""Which tensors are prunable (DESIGN §2), and ``--include`` / ``--exclude`` patterns."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

import torch

from prunecli.errors import BadInput, Unsupported
from prunecli.models.loaded import LoadedModel

_LAYER_TYPES = (
    torch.nn.Linear,
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.ConvTranspose1d,
    torch.nn.ConvTranspose2d,
    torch.nn.ConvTranspose3d,
)
# in weights-only mode: name parts that mark embeddings and normalisation layers
_NOT_PRUNABLE = re.compile(r"(embed|wte|wpe|norm|^ln(_|\d|$)|^bn(_|\d|$))", re.IGNORECASE)


def matches(name: str, pattern: str) -> bool:
    """Glob over the tensor name, or a regular expression after ``re:`` (``re.match``)."""
    if pattern.startswith("re:"):
        try:
            return re.match(pattern[3:], name) is not None
        except re.error as exc:
            raise BadInput(f"bad regular expression {pattern!r}: {exc}") from None
    return fnmatch.fnmatchcase(name, pattern)


def _candidate(name: str, tensor: torch.Tensor) -> bool:
    """Could be pruned at all: a floating tensor of two or more dimensions (never biases, norms)."""
    return tensor.is_floating_point() and tensor.dim() >= 2


def default_prunable(model: LoadedModel) -> list[str]:
    if model.weight_names is not None:  # the file's graph says which tensors are weights
        return list(model.weight_names)
    if model.hf_config is not None:  # by name, so a folder streamed or loaded agrees
        from prunecli.models.hf import is_head

        return [name for name in _by_name(model) if not is_head(name)]
    if model.module is not None and model.format != "pt2":
        layer_weights = {
            f"{name}.weight" if name else "weight"
            for name, layer in model.module.named_modules()
            if isinstance(layer, _LAYER_TYPES)
        }
        return [name for name in model.tensors if name in layer_weights]
    return _by_name(model)


def _by_name(model: LoadedModel) -> list[str]:
    """Weights-only rule: 2-D+ floating ``*weight`` tensors that are not embeddings or norms."""
    return [
        name
        for name, tensor in model.tensors.items()
        if _candidate(name, tensor)
        and name.rsplit(".", 1)[-1].endswith("weight")
        and not any(_NOT_PRUNABLE.search(part) for part in name.split("."))
    ]


def select_prunable(
    model: LoadedModel, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[str]:
    """Prunable tensor names in file order; ``include`` replaces the default set."""
    if include:
        names = [
            name
            for name, tensor in model.tensors.items()
            if _candidate(name, tensor) and any(matches(name, p) for p in include)
        ]
        for pattern in include:
            if not any(matches(name, pattern) for name in names):
                raise BadInput(
                    f"--include {pattern!r} matches no prunable tensor",
                    "only floating tensors of 2+ dimensions can be pruned; "
                    "`prunecli inspect MODEL --all` lists every tensor",
                )
    else:
        names = default_prunable(model)
    names = [name for name in names if not any(matches(name, p) for p in exclude)]
    if not names:
        raise Unsupported(
            f"{model.source} has no prunable tensor",
            "prunable tensors are Linear/Conv weights; choose some with --include",
        )
    return names


def all_finite(tensor: torch.Tensor) -> bool:
    """NaN/inf check without a tensor-sized temporary: NaN propagates into min/max, inf is one."""
    if tensor.numel() == 0:
        return True
    try:
        low, high = torch.aminmax(tensor)
    except (RuntimeError, NotImplementedError):  # dtypes without a min/max kernel (e.g. fp8)
        return bool(torch.isfinite(tensor.float()).all())
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def check_finite(model: LoadedModel, names: Sequence[str]) -> None:
    for name in names:
        if not all_finite(model.tensors[name]):
            raise BadInput(f"tensor {name!r} contains NaN or inf values; prunecli cannot rank them")
