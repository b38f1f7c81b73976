"""The checks on what `prune` and `score` are asked, made before anything is loaded, for the
command line (cli/prune_run.py) and the Python API (api.py) alike, with the same messages; and
the one table of method options: a method takes what its criterion class declares
(``Criterion.options``), and every other method option is refused (exit 2)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prunecli.errors import BadInput
from prunecli.jobs.settings import PruneSettings

if TYPE_CHECKING:
    from prunecli.pruning.criterion import Criterion

#: what every training method takes besides its own options: its training run
TRAINING_OPTIONS = ("epochs", "steps", "batch_size")


def prune_settings(
    method: str | None,
    fixed: bool,
    sparsity: float | str | None,
    scope: str,
    schedule: str,
    iterations: int | None,
    seed: int,
) -> PruneSettings:
    """The checks `prunecli prune` makes on its options, with its messages: exactly one of a
    method or ``fixed`` scores, and the sparsity, scope, schedule and rounds."""
    from prunecli.pruning.allocation import SCOPES
    from prunecli.pruning.loop import parse_sparsity
    from prunecli.pruning.schedule import SCHEDULES

    if (method is None) == (not fixed):
        raise BadInput("pass exactly one of --method or --scores")
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


def check_method_options(criterion: type[Criterion] | None, options: Mapping[str, Any]) -> None:
    """Keyword options (the Python API): a name no method takes gets a suggestion, then the
    table's refusals as on the command line."""
    known = [*method_option_names(), *TRAINING_OPTIONS]
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"options: {', '.join(known)}"
            raise BadInput(f"unknown option {name!r}", hint)
    check_options(criterion, options)


def method_option_names() -> list[str]:
    """Every method option any registered method declares, in registry order."""
    from prunecli.criteria import list_criteria

    names: dict[str, None] = {}
    for criterion in list_criteria():
        names.update(dict.fromkeys(criterion.options))
    return list(names)


def takes(criterion: type[Criterion], name: str) -> bool:
    """Whether ``criterion`` takes the option ``name`` (``--max-p`` is ``max_p``)."""
    return name in criterion.options or (criterion.trains() and name in TRAINING_OPTIONS)


def check_options(criterion: type[Criterion] | None, given: Mapping[str, object]) -> None:
    """Refuse an option the chosen method (None: ``--scores``) does not take (BadInput)."""
    for name, value in given.items():
        if value is None or value is False or (criterion and takes(criterion, name)):
            continue
        raise BadInput(*_refusal(name, criterion))


def _refusal(name: str, criterion: type[Criterion] | None) -> tuple[str, str]:
    from prunecli.criteria import list_criteria

    option = flag(name)
    methods = list_criteria()
    owners = [c.name for c in methods if takes(c, name)]
    trainers = [c.name for c in methods if c.trains()]
    trains = criterion is not None and criterion.trains()
    if owners == trainers and not trains:  # a training run's option: retrain takes it too
        return (
            f"{option} is an option of a training method: training methods are {_listed(trainers)}",
            "to train a pruned model use `prunecli retrain`",
        )
    if set(trainers) <= set(owners):
        owned = _listed([o for o in owners if o not in trainers] + ["the training methods"])
    elif not trains and set(owners) <= set(trainers):
        owned = f"a training method ({', '.join(owners)})"
    else:
        owned = _listed(owners)
    chosen = f"--method {criterion.name}" if criterion else "--scores"
    return f"{option} is an option of {owned}, not of {chosen}", "see `prunecli methods`"


def flag(name: str) -> str:
    """The command-line flag of a method option: ``max_p`` → ``--max-p``."""
    return "--" + name.replace("_", "-")


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
