"""The checks on what `prune` and `score` are asked, made before anything is loaded, for the
command line (cli/prune_run.py, cli/score.py) and the Python API (api/) alike, with the same
messages: the settings, the outputs, and the one table of method options: a method takes what
its criterion class declares (``Criterion.options``), and every other method option is refused
(exit 2)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prunecli.errors import BadInput
from prunecli.jobs.settings import PruneSettings

if TYPE_CHECKING:
    from prunecli.io.paths import Target
    from prunecli.pruning.criterion import Criterion

#: what every training method takes besides its own options: its training run (an option here
#: whose default is None is refused for the other methods; --lr and --optimizer have defaults)
TRAINING_OPTIONS = ("epochs", "steps", "batch_size", "val_fraction")


def prune_settings(
    method: str | None,
    fixed: bool,
    sparsity: float | str | None,
    scope: str,
    schedule: str,
    iterations: int | None,
    seed: int,
    pattern: str | None = None,
) -> PruneSettings:
    """The checks `prunecli prune` makes on its options, with its messages: exactly one of a
    method or ``fixed`` scores, and the sparsity (or the N:M ``pattern`` that sets it), scope,
    schedule and rounds."""
    from prunecli.pruning.allocation import SCOPES
    from prunecli.pruning.loop import parse_sparsity
    from prunecli.pruning.schedule import SCHEDULES
    from prunecli.structure.nm import parse_pattern

    if (method is None) == (not fixed):
        raise BadInput("pass exactly one of --method or --scores")
    nm = parse_pattern(pattern) if pattern is not None else None
    if sparsity is None and nm is None:
        raise BadInput("--sparsity is required", "e.g. sparsity=0.9 or '90%', or --pattern 2:4")
    target = parse_sparsity(sparsity) if sparsity is not None else 0.0
    if scope not in (*SCOPES, "owl"):  # owl: the calibrated methods' per-block sparsity
        raise BadInput(f"unknown scope {scope!r}", f"choose one of: {', '.join(SCOPES)}, owl")
    if fixed and scope == "owl":
        raise BadInput(*_owl_refusal("--scores"))
    if nm is not None:
        if sparsity is not None and abs(target - nm.sparsity) > 5e-4:
            raise BadInput(
                f"--pattern {nm} prunes {nm.sparsity:.4g} of the weights, --sparsity says {sparsity}",
                "drop --sparsity: the pattern sets it",
            )
        if scope != "global":
            raise BadInput(
                f"--pattern {nm} chooses within each group of {nm.m} weights; --scope {scope} "
                "does not apply",
                "drop --scope",
            )
        target = nm.sparsity
    if schedule not in SCHEDULES:
        raise BadInput(f"unknown schedule {schedule!r}", f"choose one of: {', '.join(SCHEDULES)}")
    check_int("iterations", iterations)
    check_int("seed", seed)
    if iterations is not None and iterations < 1:
        raise BadInput(f"--iterations must be at least 1, got {iterations}")
    if fixed and iterations not in (None, 1):
        raise BadInput("--scores are fixed: they cannot be rescored over --iterations")
    return PruneSettings(target, scope, iterations, schedule, seed, pattern=nm)


def check_grouped(criterion: type[Criterion], settings: PruneSettings) -> None:
    """``--pattern`` and ``--scope row`` choose from a criterion's scores within groups: a
    training method or npb (which chooses a whole mask itself) has none to give. ``--scope owl``
    needs a calibrated method (wanda, sparsegpt)."""
    if settings.scope == "owl" and "calibration" not in criterion.needs:
        raise BadInput(*_owl_refusal(f"--method {criterion.name}"))
    grouped = f"--pattern {settings.pattern}" if settings.pattern else "--scope row"
    if settings.pattern is None and settings.scope != "row":
        return
    if criterion.trains():
        raise BadInput(
            f"{grouped} needs a score criterion; --method {criterion.name} trains",
            _grouped_hint(),
        )
    if criterion.chooses_mask:
        raise BadInput(
            f"{grouped} needs per-weight scores; --method {criterion.name} chooses its own mask",
            _grouped_hint(),
        )


def _owl_refusal(chosen: str) -> tuple[str, str]:
    return (
        f"--scope owl sets each block's sparsity from calibration data; {chosen} has none",
        "use --method wanda or sparsegpt with --data, or another --scope",
    )


def _grouped_hint() -> str:
    """The methods that choose within groups, from the registry."""
    from prunecli.criteria import list_criteria

    names = [c.name for c in list_criteria() if not c.trains() and not c.chooses_mask]
    return f"prune with {_listed(names).replace(' and ', ' or ')}"


def check_method_options(criterion: type[Criterion] | None, options: Mapping[str, Any]) -> None:
    """Keyword options (the Python API): a name no method takes gets a suggestion, then the
    table's refusals as on the command line, then each value's type against the criterion's
    declared default (the command line's parser makes those checks there)."""
    known = list(dict.fromkeys([*method_option_names(), *TRAINING_OPTIONS]))
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            shown = ", ".join(method_option_names(one_shot=True))
            hint = f"did you mean {close[0]!r}?" if close else f"options: {shown}"
            raise BadInput(f"unknown option {name!r}", hint)
    check_options(criterion, options)
    if criterion is not None:
        for name, value in options.items():
            _check_type(criterion, name, value)


def _check_type(criterion: type[Criterion], name: str, value: object) -> None:
    """Refuse a value of another type than the option's default (None: ``option_types``); an
    int passes for a float, a bool never for a number."""
    default = criterion.options.get(name)
    expected = type(default) if default is not None else criterion.option_types.get(name)
    if value is None or expected is None:
        return
    allowed = (int, float) if expected is float else (expected,)
    if isinstance(value, bool) and expected is not bool or not isinstance(value, allowed):
        kinds = {int: "a whole number", float: "a number", str: "a string", bool: "True or False"}
        kind = kinds.get(expected, f"a {expected.__name__}")
        raise BadInput(f"{flag(name)} takes {kind}, got {value!r}")


def check_int(name: str, value: object) -> None:
    """Refuse a ``--name`` that is not a whole number (a bool is not one)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadInput(f"--{name} takes a whole number, got {value!r}")


def method_option_names(one_shot: bool = False) -> list[str]:
    """Every method option any registered method declares, methods taken by name as `prunecli
    methods` lists them (``one_shot``: only the methods that do not train, which the Python API
    runs)."""
    from prunecli.criteria import list_criteria

    names: dict[str, None] = {}
    for criterion in list_criteria():
        if not (one_shot and criterion.trains()):
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


def read_paths(
    model: str | None, data: object = None, **options: object
) -> list[tuple[str, str | None]]:
    """What a command reads, for io.paths.check_outputs: the model, a ``--data`` that names a
    path (not a built-in data set, nor data already in memory), and the file options given as
    ``rewind_to=...``."""
    from prunecli.data.sources import BUILTINS

    reads: list[tuple[str, str | None]] = [("input", model)]
    if isinstance(data, str | os.PathLike) and os.fspath(data) not in BUILTINS:
        reads.append(("--data", os.fspath(data)))
    for name, value in options.items():
        reads.append((flag(name), str(value) if value else None))
    return reads


def check_prune_output(
    source: str | None,
    output: str,
    format: str,
    force: bool,
    reads: Sequence[tuple[str, str | None]],
    dry_run: bool = False,
    reports: Sequence[Target] = (),
) -> None:
    """Refuse a pruned model's output that cannot be written or could lose data, before
    anything is loaded: a .pt2 from another input, a format the output's suffix cannot hold, a
    folder's output that is not a folder, and what io.paths.check_outputs refuses (with the
    ``reports`` written beside it). ``source``: the model's path (None: a live module)."""
    from prunecli.errors import Unsupported
    from prunecli.io.checkpoint import check_folder_output, is_folder
    from prunecli.io.paths import Target, check_outputs
    from prunecli.jobs.writing import check_format

    if output.endswith(".pt2") and not (source or "").endswith(".pt2"):
        raise Unsupported("a .pt2 output needs a .pt2 input", "write .safetensors instead")
    check_format(format, output)
    folder = source is not None and is_folder(source)
    if folder and not dry_run:
        check_folder_output(output, source)
    targets = [] if dry_run else [Target(output, folder=folder)]
    check_outputs(reads, [*targets, *reports], force)


def check_score_output(
    output: str,
    force: bool,
    reads: Sequence[tuple[str, str | None]],
    reports: Sequence[Target] = (),
) -> None:
    """Refuse a scores file's output that cannot be written or could lose data: one
    safetensors file, whatever the model (a folder's scores are one file too)."""
    from prunecli.io.paths import Target, check_outputs

    check_outputs(reads, [Target(output), *reports], force)
