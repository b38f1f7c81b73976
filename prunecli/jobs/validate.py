"""The checks on what `prune` and `score` are asked, with the CLI's messages: the Python API's
keywords (prunecli/api.py) get the refusals the command's options get."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from prunecli.errors import BadInput
from prunecli.jobs.settings import PruneSettings

#: the method options of the one-shot criteria (``--batches`` … ``--temperature``)
METHOD_OPTIONS = ("batches", "batch_size", "alpha", "beta", "max_p", "temperature")
#: the options of the training methods, which only `prunecli prune` runs
TRAINING_OPTIONS = tuple(
    "epochs steps lr optimizer momentum weight_decay lr_schedule val_fraction rewind_to "
    "rewind_step rate keep_best last_layer project_every iht_steps bingo_fraction bingo_every "
    "starts warmup_epochs fitness gamma dissipate_epochs start_sparsity".split()
)


def prune_settings(
    sparsity: float | str | None,
    scope: str,
    schedule: str,
    iterations: int | None,
    seed: int,
    fixed: bool,
) -> PruneSettings:
    """The checks `prunecli prune` makes on its options, with its messages."""
    from prunecli.pruning.allocation import SCOPES
    from prunecli.pruning.loop import parse_sparsity
    from prunecli.pruning.schedule import SCHEDULES

    if sparsity is None:
        raise BadInput("--sparsity is required", "e.g. sparsity=0.9 or '90%'")
    target = parse_sparsity(sparsity)
    if scope not in SCOPES:
        raise BadInput(f"unknown scope {scope!r}", f"choose one of: {', '.join(SCOPES)}")
    if schedule not in SCHEDULES:
        raise BadInput(f"unknown schedule {schedule!r}", f"choose one of: {', '.join(SCHEDULES)}")
    if iterations is not None and iterations < 1:
        raise BadInput(f"--iterations must be at least 1, got {iterations}")
    if fixed and iterations not in (None, 1):
        raise BadInput("--scores are fixed: they cannot be rescored over --iterations")
    return PruneSettings(target, scope, iterations, schedule, seed)


def check_method_options(options: Mapping[str, Any]) -> None:
    """Method options only: a training option gets the CLI's message, a typo a suggestion."""
    for name in options:
        if name in METHOD_OPTIONS:
            continue
        if name in TRAINING_OPTIONS:
            raise BadInput(
                f"--{name.replace('_', '-')} is an option of a training method: training "
                "methods are imp, iht, bingo, kstarts and dissipating",
                "to train a pruned model use `prunecli retrain`",
            )
        close = difflib.get_close_matches(name, METHOD_OPTIONS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"options: {', '.join(METHOD_OPTIONS)}"
        raise BadInput(f"unknown option {name!r}", hint)
