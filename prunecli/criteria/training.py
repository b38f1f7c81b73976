"""Training methods: criteria that prune while or after training (imp, iht, bingo, …).

A training method is not a score function: ``prune`` hands it the whole job and it returns the
final masks (its weights are left in the module) and one row per round for the report.

To add one, copy ``criteria/imp.py``::

    @register
    class Iht(TrainingMethod):
        name = "iht"
        summary = "iterative hard thresholding (Fridovich-Keil & Pilanci)"
        options = {"project_every": 1}           # method options and their defaults

        def run(self, job: TrainingJob) -> MethodResult:
            hook = MyHook(job.target_zeros, job.option("project_every"))
            result = job.train(job.masks(), hooks=[hook])  # the shared masked loop
            return MethodResult(hook.masks, [job.round_row(1, hook.masks, result)], result)

and add ``iht`` to the imports of ``_load_builtins`` in ``criteria/__init__.py``. Its options reach it from the
command line by name (add a ``typer.Option`` alias in its family's panel in
``cli/method_options.py`` and a parameter to ``cli/prune.py``); the contract tests in ``tests/criteria/test_training_methods.py`` cover it once
registered.

What a method may use from :class:`TrainingJob`:

- ``job.module`` (the model, in place), ``job.names`` (prunable weights), ``job.sparsity`` and
  ``job.target_zeros`` (= ``round(S · N)``, the exact count the job checks at the end),
  ``job.seed``, ``job.settings`` (a :class:`TrainSettings` from ``--epochs/--steps``, ``--lr`` …),
  ``job.data``, ``job.option(name)`` (its ``options``, given on the command line or defaulted);
- ``job.masks()`` the current keep-masks (``weight != 0``); ``job.train(masks, hooks, settings)``
  runs :func:`prunecli.training.loop.train` with the job's progress bar; ``job.prune_lowest
  (scores, masks, n)`` the exact, tie-stable selection every criterion shares;
  ``job.round_row(...)`` builds a report row.

The job zeroes what the returned masks drop, checks the weights are finite, and writes the model
with ``pruning.rounds`` in the report. A method that ends off the target (e.g. ``--keep-best``)
says why in ``MethodResult.warnings``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from prunecli.errors import BadInput, Unsupported
from prunecli.pruning.allocation import prune_count
from prunecli.pruning.criterion import Criterion, Inputs, ScoreContext
from prunecli.pruning.select import prune_lowest
from prunecli.training.hooks import TrainHook
from prunecli.training.loop import train
from prunecli.training.settings import TrainProgress, TrainResult, TrainSettings

if TYPE_CHECKING:
    from prunecli.data.labelled import Dataset
    from prunecli.models.loaded import LoadedModel


@dataclass
class Round:
    """One row of the report's ``pruning.rounds``."""

    round: int  # 0 = the dense (or input) network, when a method reports it
    sparsity: float  # of the prunable weights, as trained in this round
    test_accuracy: float | None
    test_loss: float | None = None
    train_loss: float | None = None
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: the best of the test evaluations during the round's training (one per epoch by default):
    #: the "max accuracy" some papers report (the MNIST-1D lottery-ticket notebook does)
    best_test_accuracy: float | None = None

    def to_json(self) -> dict[str, Any]:
        row = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return {**row, **self.extra}


@dataclass
class MethodResult:
    masks: dict[str, torch.Tensor]  # final keep-masks of ``job.names``
    rounds: list[Round]
    training: TrainResult | None = None  # the last training run (its history goes in the report)
    warnings: list[str] = field(default_factory=list)
    weights: Mapping[str, torch.Tensor] | None = None  # loaded into the module when given


@dataclass
class TrainingJob:
    model: LoadedModel
    names: list[str]
    sparsity: float
    settings: TrainSettings
    inputs: Inputs
    method_options: dict[str, Any]
    scope: str = "global"
    progress: TrainProgress | None = None
    label: str = ""  # shown beside the progress (e.g. "round 2/12")

    @property
    def module(self) -> nn.Module:
        return self.model.require_graph("a training method")

    @property
    def data(self) -> Dataset:
        if self.inputs.data is None:
            raise BadInput("a training method needs labelled data: pass --data")
        return self.inputs.data

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def total(self) -> int:
        return sum(self.module.get_parameter(name).numel() for name in self.names)

    @property
    def target_zeros(self) -> int:
        return prune_count(self.sparsity, self.total)

    def option(self, name: str) -> Any:
        return self.method_options[name]

    def masks(self) -> dict[str, torch.Tensor]:
        return {name: self.module.get_parameter(name).detach() != 0 for name in self.names}

    def sparsity_of(self, masks: Mapping[str, torch.Tensor]) -> float:
        kept = sum(int(masks[name].sum()) for name in self.names)
        return 1.0 - kept / self.total if self.total else 0.0

    def train(
        self,
        masks: Mapping[str, torch.Tensor],
        hooks: Iterable[TrainHook] = (),
        settings: TrainSettings | None = None,
        module: nn.Module | None = None,
    ) -> TrainResult:
        """Masked training of ``module`` (default the job's) with the job's settings."""
        label = self.label
        progress = self.progress

        def tick(done: int, total: int, info: dict[str, float]) -> None:
            if progress:
                progress(done, total, {**info, "label": label} if label else info)

        return train(
            module if module is not None else self.module,
            dict(masks),
            self.data,
            settings or self.settings,
            hooks,
            tick,
        )

    def prune_lowest(
        self, scores: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], n: int
    ) -> dict[str, torch.Tensor]:
        """Keep-masks after pruning the ``n`` lowest-scoring live entries (ties by position)."""
        return prune_lowest({name: scores[name] for name in masks}, dict(masks), n)

    def round_row(
        self, index: int, masks: Mapping[str, torch.Tensor], result: TrainResult | None
    ) -> Round:
        last = result.history[-1] if result and result.history else None
        return Round(
            index,
            self.sparsity_of(masks),
            result.test_accuracy if result else None,
            result.test_loss if result else None,
            last.train_loss if last else None,
            result.steps if result else 0,
            best_test_accuracy=result.best_test_accuracy if result else None,
        )

    def with_settings(self, **changes: Any) -> TrainSettings:
        return replace(self.settings, **changes)


class TrainingMethod(Criterion):
    """Base class of the methods that train (``needs`` includes ``training``); see the module
    docstring. Subclasses set ``name``, ``summary``, ``options`` (name → default) and ``run``."""

    needs: ClassVar[tuple[str, ...]] = ("graph", "data", "training")
    options: ClassVar[dict[str, Any]] = {}
    #: the ``--scope`` values the method honours (most prune with one global threshold)
    scopes: ClassVar[tuple[str, ...]] = ("global",)

    def run(self, job: TrainingJob) -> MethodResult:
        raise NotImplementedError

    def score(self, ctx: ScoreContext) -> Mapping[str, torch.Tensor]:
        raise Unsupported(
            f"{self.name} trains the model; it has no per-weight score",
            f"use `prunecli prune --method {self.name}`",
        )

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """The method's options: the defaults, overridden by those given on the command line."""
        return {**cls.options, **{k: v for k, v in given.items() if k in cls.options}}
