"""A transformer's repeated blocks, and what the block runner asks of a pruning method.

The blocks are the ``nn.ModuleList`` of decoder (or encoder) layers: transformers names their
class in ``_no_split_modules`` (the unit it never splits across devices), and the list whose
children are all of such a class is the one the runner walks.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from prunecli.errors import Unsupported


@dataclass(frozen=True)
class Blocks:
    """The block list of ``model`` and where it sits (``model.layers``, ``transformer.h``)."""

    model: torch.nn.Module
    layers: torch.nn.ModuleList
    prefix: str

    def name(self, index: int) -> str:
        return f"{self.prefix}.{index}"

    def __len__(self) -> int:
        return len(self.layers)


@dataclass(frozen=True)
class Block:
    """One block while the runner holds it: its index, its name in the checkpoint, the module
    (materialised on the runner's device) and its linear layers by full tensor-name prefix
    (``model.layers.3.self_attn.q_proj``: the weight is that name + ``.weight``); ``weights``
    gives each as an out × in view whatever the layer's class."""

    index: int
    name: str
    module: torch.nn.Module
    linears: dict[str, torch.nn.Module]

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        return {name: weight_matrix(module) for name, module in self.linears.items()}


class BlockPruner(Protocol):
    """What a calibrated method gives the runner. For each block, ``observe`` sees the input of
    every linear layer of the still-dense block for each calibration batch (the tensor as the
    layer receives it: ``[batch, tokens, in_features]``), then ``prune_block`` changes the block's
    weights in place; the runner then reruns the block so the next one sees the pruned outputs."""

    def observe(self, name: str, module: torch.nn.Module, inputs: torch.Tensor) -> None: ...

    def prune_block(self, block: Block) -> None: ...


class OnlyLayers:
    """``pruner`` limited to the linear layers whose weights are ``weights`` (full tensor
    names, ``model.layers.3.mlp.up_proj.weight``): the others are neither observed (no
    statistics held) nor pruned, so they are written unchanged. A block with none of them
    still runs, as the next block needs its outputs."""

    def __init__(self, pruner: BlockPruner, weights: Collection[str]) -> None:
        self.pruner = pruner
        self.layers = {name.removesuffix(".weight") for name in weights}

    def observe(self, name: str, module: torch.nn.Module, inputs: torch.Tensor) -> None:
        if name in self.layers:
            self.pruner.observe(name, module, inputs)

    def prune_block(self, block: Block) -> None:
        self.pruner.prune_block(self._chosen(block))

    def survey(self, block: Block) -> None:
        """OWL's first pass (calibration/owl.py): the outliers of the chosen layers only."""
        self.pruner.survey(self._chosen(block))  # type: ignore[attr-defined]

    def _chosen(self, block: Block) -> Block:
        return replace(block, linears={n: m for n, m in block.linears.items() if n in self.layers})


#: called once a block is written: (blocks done, blocks in all, the block's name)
Progress = Callable[[int, int, str], None]


def block_classes(model: torch.nn.Module) -> list[str]:
    """The class names transformers keeps whole (``_no_split_modules``), over the model and
    its sub-models (a task model such as ``BertForMaskedLM`` leaves it to its ``BertModel``)."""
    names: list[str] = []
    for module in model.modules():
        for name in getattr(module, "_no_split_modules", None) or []:
            if name not in names:
                names.append(name)
    return names


def find_blocks(model: torch.nn.Module, source: str) -> Blocks:
    """The ``nn.ModuleList`` whose children are all of one block class (the longest, if
    several); Unsupported naming what is missing when there is none."""
    classes = block_classes(model)
    if not classes:
        raise Unsupported(
            f"{source}: {type(model).__name__} does not name its block class "
            "(transformers' _no_split_modules), so its blocks cannot be found",
            "calibrated methods run on Llama, Mistral, Qwen2, GPT-2, OPT and BERT-like models",
        )
    found: list[tuple[str, torch.nn.ModuleList]] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module):
            kinds = {type(child).__name__ for child in module}
            if len(kinds) == 1 and kinds <= set(classes):
                found.append((name, module))
    if not found:
        raise Unsupported(
            f"{source}: {type(model).__name__} has no list of {' or '.join(classes)} "
            "modules, so its blocks cannot be found",
            "calibrated methods run on Llama, Mistral, Qwen2, GPT-2, OPT and BERT-like models",
        )
    prefix, layers = max(found, key=lambda item: len(item[1]))
    return Blocks(model, layers, prefix)


def linears(block: torch.nn.Module, name: str) -> dict[str, torch.nn.Module]:
    """Every linear layer inside ``block`` by full name, in module order: ``nn.Linear`` and
    transformers' ``Conv1D`` (GPT-2's, which stores its weight as in × out)."""
    return {
        f"{name}.{sub}": module
        for sub, module in block.named_modules()
        if isinstance(module, torch.nn.Linear) or _is_conv1d(module)
    }


def weight_matrix(module: torch.nn.Module) -> torch.Tensor:
    """The layer's weight as out × in (a view: changing it changes the layer), for
    ``nn.Linear`` and ``Conv1D`` alike."""
    weight = module.weight
    return weight.T if _is_conv1d(module) else weight


def _is_conv1d(module: torch.nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None
