"""What a criterion is: a named scorer that declares what it needs (DESIGN §3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from prunecli.data.labelled import Dataset
    from prunecli.models.loaded import LoadedModel
    from prunecli.pruning.live import LiveSet

#: what a criterion can need, in the order `prunecli methods` lists them
NEEDS = ("weights", "graph", "input_shape", "data", "calibration", "training")


@dataclass
class Inputs:
    """What a run supplies beyond the model: checked against a criterion's ``needs`` up front."""

    input_shape: tuple[int, ...] | None = None  # without the batch dimension
    data: Dataset | None = None  # labelled data (``--data``)
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)  # method options, e.g. alpha, batches


@dataclass
class ScoreContext:
    """Everything a criterion may read. The current mask of a tensor is ``tensor != 0``."""

    model: LoadedModel
    names: list[str]  # prunable tensors, in file order
    seed: int = 0
    round: int = 0  # 0-based round of an iterative schedule
    inputs: Inputs = field(default_factory=Inputs)
    # what this round prunes to (``prune``); None when only scoring. Mask-producing criteria
    # (npb) need them to size their per-layer budgets the way the selection will
    sparsity: float | None = None
    scope: str | None = None
    # the live entries as the pruning loop tracks them between rounds (None when scoring)
    live: LiveSet | None = None

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self.inputs.input_shape

    @property
    def data(self) -> Dataset | None:
        return self.inputs.data

    @property
    def device(self) -> str:
        return self.inputs.device

    @property
    def options(self) -> dict[str, Any]:
        return self.inputs.options

    def tensor(self, name: str) -> torch.Tensor:
        return self.model.tensors[name]

    def masks(self) -> dict[str, torch.Tensor]:
        """The current keep-masks of every prunable tensor."""
        return {name: self.alive(name) for name in self.names}

    def alive(self, name: str) -> torch.Tensor:
        return self.live.alive(name) if self.live else self.model.tensors[name] != 0

    def live_positions(self, name: str) -> torch.Tensor | None:
        """Ascending flat positions of the live entries of a mostly pruned tensor, when the
        pruning loop tracks them (pruning/live.py); None otherwise."""
        return self.live.positions.get(name) if self.live else None


class Criterion:
    """Base class: subclasses set the class attributes and implement :meth:`score`.

    ``score`` returns, for every name in ``ctx.names``, a finite floating tensor of the weight's
    shape; higher means keep. Scores of already-pruned weights are ignored (they stay pruned).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ("weights",)
    default_iterations: ClassVar[int] = 1
    default_scope: ClassVar[str] = "global"
    #: True for a criterion that picks a whole mask (its scores are 0/1): ``--pattern`` and
    #: ``--scope row``, which choose within groups, refuse it
    chooses_mask: ClassVar[bool] = False
    #: the method options it takes (``--max-p`` is ``max_p``) and their defaults (None: worked
    #: out per run); `prune` and `score` refuse any other method option before loading the model
    options: ClassVar[dict[str, Any]] = {}
    #: the type of each option whose default is None (the others take their default's type)
    option_types: ClassVar[dict[str, type]] = {}

    def score(self, ctx: ScoreContext) -> Mapping[str, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def needs_graph(cls) -> bool:
        return "graph" in cls.needs

    @classmethod
    def trains(cls) -> bool:
        return "training" in cls.needs
