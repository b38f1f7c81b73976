"""The order a model declares its tensors in, for reports: the module's, else the file's.

A safetensors file stores its tensors sorted by name (``attention.output`` before
``attention.self.key``, ``layer.10`` before ``layer.2``), so its own order says little. When the
module is known its ``state_dict`` order is used; for a Hugging Face folder read without a module
(``inspect`` streams it) the class named by ``config.json`` is built on the ``meta`` device (no
memory) when transformers is installed. Otherwise names sorted by name are put in natural order
(numbers compared as numbers); any other stored order (a ``.pt2`` program, ONNX) is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from prunecli.models.loaded import LoadedModel

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """``layer.10`` after ``layer.2``: digit runs compare as numbers, the rest as text."""
    return tuple((1, int(part)) if part.isdigit() else (0, part) for part in _DIGITS.split(name))


def declared_order(model: LoadedModel) -> list[str]:
    """Every tensor name of ``model``: the module's order first, then the rest of the file."""
    stored = list(model.tensors)
    known = _module_order(model)
    if known is None:
        if stored == sorted(stored):
            return sorted(stored, key=natural_key)
        return stored
    present = set(stored)
    ordered = [name for name in known if name in present]
    seen = set(ordered)
    return ordered + sorted((n for n in stored if n not in seen), key=natural_key)


def in_order(model: LoadedModel, names: Iterable[str]) -> list[str]:
    """``names`` in the model's declared order (names it does not hold go last, as given)."""
    wanted = list(dict.fromkeys(names))
    rank = {name: index for index, name in enumerate(declared_order(model))}
    return sorted(wanted, key=lambda name: rank.get(name, len(rank)))


def _module_order(model: LoadedModel) -> Sequence[str] | None:
    if model.module is not None:
        try:
            return list(model.module.state_dict())
        except Exception:  # noqa: BLE001 - a user's module may refuse; the file order remains
            return None
    checkpoint = model.checkpoint
    folder = getattr(checkpoint, "folder", None)
    if model.hf_config is None or folder is None:
        return None
    from prunecli.models import hf

    if hf.remote_code(model.hf_config):
        return None
    # None without transformers, or for a config claiming more layers than the folder holds
    return hf.meta_order(model.hf_config, len(model.tensors))
