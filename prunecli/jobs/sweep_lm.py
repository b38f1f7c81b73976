"""`sweep` on a causal language model (a Hugging Face folder): methods × sparsities × seeds, each
run exactly as `prunecli prune FOLDER … -o RUN/` writes it (wanda and sparsegpt block by block)
and measured as `prunecli eval RUN/ --data TEXT` measures it, perplexity over windows of
``--seq-len`` tokens; one run's folder at a time, in a temporary folder removed after its
measurement (docs/evaluation.md).

Everything that can be refused is checked before the first run: the methods (magnitude, random,
wanda, sparsegpt), the folder, its blocks and the calibration sizes, the text.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunecli.errors import BadInput, Unsupported
from prunecli.evaluation.sweep import Level, level_key, level_parts
from prunecli.jobs.evaluate import EvalRequest
from prunecli.pruning.criterion import Criterion
from prunecli.structure.nm import Pattern

LM_METHODS = ("magnitude", "random", "wanda", "sparsegpt")
METRIC = "perplexity"


@dataclass(frozen=True)
class LMSweepRequest:
    """A sweep of a causal LM folder as asked, its lists already parsed."""

    model: str
    methods: tuple[str, ...]
    sparsities: tuple[float, ...]
    seeds: tuple[int, ...]
    data: str  # the text perplexity is measured on
    patterns: tuple[Pattern, ...] = ()  # N:M levels beside the sparsities
    calibration: str | None = None  # wanda's and sparsegpt's text (default: data)
    samples: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None  # windows per forward pass of the evaluation (default 1)
    scope: str = "global"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    device: str = "cpu"
    trust_remote_code: bool = False

    @property
    def levels(self) -> tuple[Level, ...]:
        return (*self.sparsities, *self.patterns)

    @property
    def calibration_text(self) -> str:
        return self.calibration or self.data


def is_language_model_folder(source: str) -> bool:
    """A folder with a ``config.json``: a Hugging Face model, swept by perplexity."""
    path = Path(source)
    return source != "-" and path.is_dir() and (path / "config.json").is_file()


def check_lm_sweep(request: LMSweepRequest, criteria: dict[str, type[Criterion]]) -> None:
    """Refuse, before any run, what one of the runs could not do."""
    from prunecli.calibration.data import check_data
    from prunecli.io.checkpoint import open_checkpoint
    from prunecli.jobs.calibrated import plan_calibrated
    from prunecli.jobs.validate import check_grouped

    for name in criteria:
        if name not in LM_METHODS:
            raise Unsupported(
                f"sweep on a transformers folder compares {', '.join(LM_METHODS)}; "
                f"--method {name} does not run on one here",
                f"drop {name} from --methods",
            )
    checkpoint = open_checkpoint(request.model)  # headers and config.json, read once
    _check_causal(request, checkpoint.config or {})
    folder = Path(request.model)
    check_data(request.data, folder)
    calibrated = [name for name in criteria if "calibration" in criteria[name].needs]
    if request.calibration is not None and not calibrated:
        raise BadInput(
            "--calibration is the text wanda and sparsegpt calibrate on; none is in --methods",
            "drop --calibration",
        )
    if calibrated:
        try:
            check_data(request.calibration_text, folder)
        except BadInput as error:  # its messages name --data, the option it checks in prune
            if request.calibration is None:
                raise
            message = error.message.replace("--data", "--calibration", 1)
            raise BadInput(message, error.hint) from None
    # each method's plan, once for a sparsity and once per N:M pattern (the value changes nothing)
    levels = [*request.sparsities[:1], *request.patterns]
    for name, level in ((name, level) for name in criteria for level in levels):
        settings = _settings(request, name, level, 0)
        if name not in calibrated:
            if request.scope == "owl":
                raise BadInput(
                    f"--scope owl is wanda's and sparsegpt's; --methods {name} does not take it",
                    f"drop {name} from --methods, or --scope owl",
                )
            check_grouped(criteria[name], settings)
        else:
            plan_calibrated(
                request.model,
                name,
                settings,
                _calibration_options(request),
                request.trust_remote_code,
                request.include,
                request.exclude,
            )

    uncalibrated = {name: c for name, c in criteria.items() if name not in calibrated}
    if request.patterns and uncalibrated:  # the layers magnitude and random would prune
        from prunecli.jobs.stream import lazy_model
        from prunecli.jobs.sweep import check_levels
        from prunecli.pruning.prunable import select_prunable

        lazy = lazy_model(checkpoint)
        names = select_prunable(lazy, request.include, request.exclude)
        shapes = {name: tuple(lazy.tensors[name].shape) for name in names}
        check_levels(uncalibrated, request.scope, request.patterns, shapes)


def _settings(request: LMSweepRequest, method: str, level: Level, seed: int) -> Any:
    """`prune`'s settings for ``method`` at ``level`` (a sparsity or an N:M pattern)."""
    from prunecli.jobs.validate import prune_settings

    sparsity, pattern = level_parts(level)
    if pattern is not None:
        return prune_settings(
            method, False, None, request.scope, "exponential", None, seed, str(pattern)
        )
    return prune_settings(method, False, sparsity, request.scope, "exponential", None, seed)


def _check_causal(request: LMSweepRequest, config: dict[str, Any]) -> None:
    names = config.get("architectures")
    causal = isinstance(names, list) and any(
        isinstance(n, str) and n.endswith(("ForCausalLM", "LMHeadModel")) for n in names
    )
    if not causal:
        raise Unsupported(
            f"sweep measures the perplexity of a causal language model; {request.model} is not "
            "one (config.json's architectures)",
            "prune it, then `prunecli eval OUTPUT --reference DENSE --data TEXT`",
        )


def _calibration_options(request: LMSweepRequest) -> dict[str, Any]:
    return {"samples": request.samples, "seq_len": request.seq_len}


def run_lm_sweep(
    request: LMSweepRequest,
    criteria: dict[str, type[Criterion]],
    progress: Callable[..., None] | None = None,
) -> dict[str, Any]:
    """Every run, in the order asked, with the dense figure and the summary: the
    ``prunecli.sweep/1`` document with ``metric: perplexity``. ``progress(runs done, runs,
    info)``: ``info["label"]`` names the run, and the block a calibrated one is at."""
    from prunecli.evaluation.sweep import SCHEMA, summarize

    started = time.perf_counter()
    total = len(request.methods) * len(request.levels) * len(request.seeds)
    runs: list[dict[str, Any]] = []

    def tell(info: dict[str, Any] | None = None) -> None:
        if progress:
            progress(len(runs), total, *([info] if info else []))

    tell()

    def at_window(done: int, windows: int) -> None:
        tell({"label": f"dense: perplexity {done}/{windows}"})

    dense, (entry, windows) = _perplexity(request.model, request, None, at_window)
    with tempfile.TemporaryDirectory(prefix="prunecli-sweep-") as scratch:
        for method, level, seed in itertools.product(
            request.methods, request.levels, request.seeds
        ):
            folder = str(Path(scratch) / f"run-{len(runs)}")
            runs.append(_run(request, criteria[method], method, level, seed, folder, windows, tell))
            tell()
    return {
        "schema": SCHEMA,
        "model": request.model,
        "data": request.data,
        "metric": METRIC,
        "settings": {
            "methods": list(request.methods),
            "sparsities": list(request.sparsities),
            "patterns": [str(p) for p in request.patterns],
            "seeds": list(request.seeds),
            "scope": request.scope,
            "retrain_steps": 0,
            "retrain": None,
            "calibration": request.calibration_text
            if any("calibration" in criteria[m].needs for m in request.methods)
            else None,
            "samples": request.samples,
            "seq_len": request.seq_len,
            "evaluation": entry["protocol"],
        },
        "dense": {METRIC: dense},
        "runs": runs,
        "summary": summarize(runs, request.methods, request.levels, METRIC),
        "seconds": time.perf_counter() - started,
    }


def _run(
    request: LMSweepRequest,
    criterion: type[Criterion],
    method: str,
    level: Level,
    seed: int,
    folder: str,
    windows: Any,
    tell: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """One run: pruned into ``folder``, measured on ``windows``, the folder deleted."""
    started = time.perf_counter()
    sparsity, pattern = level_key(level)
    label = f"{method} {pattern or f'{sparsity:g}'} (seed {seed})"
    tell({"label": label})

    def at_block(done: int, blocks: int, name: str) -> None:
        tell({"label": f"{label}: {name} {done}/{blocks}"})

    report = _prune(request, criterion, method, level, seed, folder, at_block)

    def at_window(done: int, total: int) -> None:
        tell({"label": f"{label}: perplexity {done}/{total}"})

    value, _ = _perplexity(folder, request, windows, at_window)
    shutil.rmtree(folder)
    return {
        "method": method,
        "sparsity": sparsity,
        "pattern": pattern,
        "seed": seed,
        "achieved_sparsity": report.sparsity,
        METRIC: value,
        "seconds": time.perf_counter() - started,
    }


def _prune(
    request: LMSweepRequest,
    criterion: type[Criterion],
    method: str,
    level: Level,
    seed: int,
    output: str,
    at_block: Callable[[int, int, str], None] | None = None,
) -> Any:
    """`prunecli prune MODEL --method METHOD --sparsity S|--pattern N:M --seed SEED -o OUTPUT`'s
    report."""
    settings = _settings(request, method, level, seed)
    if "calibration" in criterion.needs:
        from prunecli.jobs.calibrated import calibrated_prune_to_file, plan_calibrated

        plan = plan_calibrated(
            request.model,
            method,
            settings,
            _calibration_options(request),
            request.trust_remote_code,
            request.include,
            request.exclude,
        )
        return calibrated_prune_to_file(
            plan,
            request.calibration_text,
            output,
            request.device,
            at_block,
            request.trust_remote_code,
        )
    from prunecli.jobs.prune import prune_to_file
    from prunecli.jobs.session import open_model

    loaded, names = open_model(
        request.model,
        include=request.include,
        exclude=request.exclude,
        trust_remote_code=request.trust_remote_code,
    )
    return prune_to_file(loaded, names, criterion(), settings, output)


def _perplexity(
    folder: str,
    request: LMSweepRequest,
    windows: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, Any]:
    """`prunecli eval FOLDER --data TEXT --seq-len L`'s perplexity, on ``windows`` (the text's
    token windows, cut once for every run; None: cut them here); (value, the entry)."""
    from prunecli.evaluation.metrics import perplexity
    from prunecli.jobs.evaluate import token_windows
    from prunecli.jobs.session import open_model

    model = open_model(folder, check_weights=False, trust_remote_code=request.trust_remote_code)[0]
    evaluation = EvalRequest(
        data=request.data,
        batch_size=request.batch_size,
        seq_len=request.seq_len,
        device=request.device,
        trust_remote_code=request.trust_remote_code,
    )
    if windows is None:
        windows = token_windows(model, evaluation)
    module = model.require_graph("sweep")
    entry = perplexity(
        module, windows, evaluation.data_name, request.batch_size, request.device, progress
    )
    return entry["value"], (entry, windows)
