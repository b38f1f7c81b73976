"""Lottery tickets on MNIST-1D: prunecli's IMP and random masks beside the published numbers,
then the other criteria after the same training.

MLP [40, 500, 500, 10], Adam lr 0.02, 1500 steps of batch 100 on ``--data mnist1d`` (4000
training / 1000 test sequences). Rows, each the mean test accuracy over ``--seeds``:

- dense (IMP's round 0) and IMP with rewinding to init to 0.80 → 0.92 → 0.96 → 0.98, a chain
  of ``prune --method imp`` runs (each from the previous one's output, rewound to the init, so
  every row lands exactly on its sparsity); by default ``--rate 0.05 --scope global
  --last-layer same`` (77 rounds to 0.98: the published notebook raises sparsity by about 1% per
  retrain over 100 retrains and prunes the output layer like the rest; rate 0.2, the issue's
  example, finds tickets 2–4 points worse at 0.80–0.96);
- a random mask at the same sparsities with the same init, then the same training: prunecli's
  ``random`` (weights only, biases kept as DESIGN §2 says) and, like for like with the
  published baseline (greydanus/mnist1d's lottery-tickets notebook), a random mask on every
  layer's weight *and bias* at the sparsity;
- synflow, snip, grasp, npb, magnitude at init, ERK-random at 0.9 and 0.99, then the same
  training; iht, kstarts, dissipating, which train by themselves, for the same 1500 steps.

Everything goes through prunecli's library (``prune_to_file``, ``retrain_to_file``), the code
the CLI runs, in one process per seed (``--jobs`` at a time, one torch thread each).

    python benchmarks/bench_mnist1d.py                 # seeds 0 1, ~14–19 min on 2 cores
    python benchmarks/bench_mnist1d.py --quick         # 300 steps, fewer rows: ~1 min
    python benchmarks/bench_mnist1d.py --seeds 0 1 2 --json results.json
    python benchmarks/bench_mnist1d.py --from-json a.json b.json    # pool saved runs
    python benchmarks/bench_mnist1d.py --from-json a.json --fill    # add rows they lack

Each row is shown as best / final test accuracy: best is the best of the training's test
evaluations (one per epoch, ~38 in 1500 steps, and the final weights), which is what the
published numbers are (the notebook's ``max_acc``, over 16 evaluations); final is the last
weights'.

Targets (exit 1 when missed, full run only), on best-of-evaluations: IMP within 4 points of the
published IMP mean at each sparsity; IMP − random ≥ 5 points at 0.92, 0.96 and 0.98 (the
published gap is 14–33), against the published baseline's random mask (biases masked too); the
gap to prunecli's own ``random`` is printed beside it.

The published numbers come from a different setup (a residual hidden layer, layer-wise pruning
of weights *and biases*, sparsity raised linearly over 100 retrains, sequential batches, the
mask taken from the step-1000 checkpoint); this benchmark follows the issue's setup (plain MLP,
global IMP, biases never pruned as DESIGN §2 says), so it compares in kind, not bit for bit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (sparsity) → (IMP trials, random-mask trials), from the MNIST-1D paper (Greydanus 2020)
PUBLISHED = {
    0.0: ((66.4, 64.8), (66.4, 64.8)),
    0.80: ((72.9, 72.1), (68.6, 66.3)),
    0.92: ((75.6, 74.4), (60.6, 61.8)),
    0.96: ((69.3, 71.5), (51.5, 49.9)),
    0.98: ((63.0, 63.8), (34.6, 27.2)),
}
#: the published baseline's random mask: biases masked too (see _published_random)
PUBLISHED_RANDOM = "random-with-biases"
AT_INIT = [
    ("synflow", "synflow", "global"),
    ("snip", "snip", "global"),
    ("grasp", "grasp", "global"),
    ("npb", "npb", "global"),
    ("magnitude-at-init", "magnitude", "global"),
    ("ERK-random", "random", "erk"),
]
TRAINING = ["iht", "kstarts", "dissipating"]
WIDTHS = [40, 500, 500, 10]
#: the IMP chain: a finer rate than the issue's example (0.2) finds better tickets (see README)
RATE, SCOPE, LAST_LAYER = 0.05, "global", "same"


def run_seed(seed: int, steps: int, imp_targets: list[float], others: list[float], imp) -> dict:
    """All rows for one seed: {row name: {sparsity: [final, best] test accuracy}} and timings
    (best: the best of the training's test evaluations, one per epoch, as the notebook's
    max_acc). ``imp``: the chain's (rate, scope, last layer)."""
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        init = _write_init(work / "init.safetensors", seed)
        settings = _settings(steps, seed)
        rows: dict[str, dict[str, float]] = {}
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        rows["imp"], dense = _imp_chain(work, init, settings, imp_targets, *imp)
        rows["dense"] = {"0.0": dense}
        seconds["imp"] = time.perf_counter() - started
        started = time.perf_counter()
        rows["random"] = {
            str(s): _at_init(work, init, "random", "global", s, settings) for s in imp_targets
        }
        seconds["random"] = time.perf_counter() - started
        _fill_published_random(rows, seconds, init, settings, imp_targets)
        for label, method, scope in AT_INIT:
            started = time.perf_counter()
            rows[label] = {str(s): _at_init(work, init, method, scope, s, settings) for s in others}
            seconds[label] = time.perf_counter() - started
        for method in TRAINING:
            started = time.perf_counter()
            rows[method] = {str(s): _trained(work, init, method, s, settings) for s in others}
            seconds[method] = time.perf_counter() - started
    chain = dict(zip(("rate", "scope", "last_layer"), imp, strict=True))
    return {"seed": seed, "imp": chain, "rows": rows, "seconds": seconds}


def _settings(steps: int, seed: int):
    from prunecli.training.settings import TrainSettings

    return TrainSettings(steps=steps, batch_size=100, lr=0.02, optimizer="adam", seed=seed)


def _write_init(path: Path, seed: int) -> str:
    """What `prunecli init mlp --arch-kwargs '{"widths":[40,500,500,10]}' --seed S` writes."""
    import torch

    from prunecli.jobs.writing import write_model
    from prunecli.models.loaded import Architecture, LoadedModel, build_module

    architecture = Architecture("mlp", {"widths": WIDTHS})
    torch.manual_seed(seed)
    module = build_module(architecture)
    model = LoadedModel(
        dict(module.state_dict()), {}, "mlp", "safetensors", None, module, architecture
    )
    write_model(model, str(path), {"seed": str(seed), "init": "true"})
    return str(path)


def _prune(source: str, method: str, scope: str, sparsity: float, output: str, settings, options):
    from prunecli.criteria import get_criterion
    from prunecli.jobs.prune import prune_to_file
    from prunecli.jobs.session import open_model, resolve_inputs
    from prunecli.jobs.settings import PruneSettings, TrainingRun

    criterion_class = get_criterion(method)
    model, names = open_model(source)
    data = "mnist1d" if "data" in criterion_class.needs else None
    inputs = resolve_inputs(criterion_class, model, None, data, "cpu", options, training=True)
    prune = PruneSettings(sparsity, scope, None, "exponential", settings.seed, inputs)
    training = TrainingRun(settings, options) if criterion_class.trains() else None
    return prune_to_file(model, names, criterion_class(), prune, output, None, "dense", training)


def _imp_chain(
    work: Path, init: str, settings, targets: list[float], rate: float, scope: str, last_layer: str
) -> tuple[dict, list[float]]:
    """IMP to each target in turn, each run continuing from the last, always rewound to init."""
    source, accuracies, dense = init, {}, None
    for sparsity in targets:
        output = str(work / f"imp-{sparsity}.safetensors")
        options = {"rate": rate, "rewind_to": init, "last_layer": last_layer}
        report = _prune(source, "imp", scope, sparsity, output, settings, options)
        rounds = report.pruning["rounds"]
        if dense is None:
            dense = [rounds[0]["test_accuracy"], rounds[0]["best_test_accuracy"]]
        accuracies[str(sparsity)] = [rounds[-1]["test_accuracy"], rounds[-1]["best_test_accuracy"]]
        source = output
    return accuracies, dense


def _both(training: dict) -> list[float]:
    """[final, best] test accuracy of a report's training (best over its history)."""
    seen = [row["test_accuracy"] for row in training["history"]]
    seen = [value for value in seen if value is not None]
    return [training["test_accuracy"], max([*seen, training["test_accuracy"]])]


def _at_init(work: Path, init: str, method: str, scope: str, sparsity: float, settings) -> list:
    """Prune the init with ``method``, then train the mask for the same steps (retrain)."""
    from prunecli.data.sources import load_data
    from prunecli.jobs.session import open_model
    from prunecli.jobs.train import RetrainRequest, retrain_to_file

    pruned = str(work / f"{method}-{scope}-{sparsity}.safetensors")
    _prune(init, method, scope, sparsity, pruned, settings, {})
    model, names = open_model(pruned)
    request = RetrainRequest(settings, load_data("mnist1d"))
    report = retrain_to_file(model, names, request, str(work / "trained.safetensors"))
    return _both(report.training)


def _published_random(init: str, sparsity: float, settings) -> list[float]:
    """The published baseline's random mask (greydanus/mnist1d lottery-tickets notebook): every
    layer's weight AND bias at ``sparsity``, drawn at random per tensor, then the same training.
    prunecli's own ``random`` never prunes biases (DESIGN §2), so this mask is built here."""
    import torch

    from prunecli.data.sources import load_data
    from prunecli.jobs.session import open_model
    from prunecli.training.loop import train

    model, _ = open_model(init)
    generator = torch.Generator().manual_seed(settings.seed)
    masks = {}
    for name, param in model.module.named_parameters():
        order = torch.randperm(param.numel(), generator=generator)
        keep = torch.ones(param.numel(), dtype=torch.bool)
        keep[order[: round(sparsity * param.numel())]] = False
        masks[name] = keep.reshape(param.shape)
    result = train(model.module, masks, load_data("mnist1d"), settings)
    return [result.test_accuracy, result.best_test_accuracy]


def _fill_published_random(rows: dict, seconds: dict, init: str, settings, targets) -> None:
    started = time.perf_counter()
    rows[PUBLISHED_RANDOM] = {str(s): _published_random(init, s, settings) for s in targets}
    seconds[PUBLISHED_RANDOM] = time.perf_counter() - started


def _fill_missing(result: dict, steps: int, imp_targets: list[float]) -> dict:
    """Add the rows a saved run (``--from-json``, older script) lacks; same seed and settings."""
    import torch

    torch.set_num_threads(1)
    if PUBLISHED_RANDOM in result["rows"]:
        return result
    with tempfile.TemporaryDirectory() as folder:
        init = _write_init(Path(folder) / "init.safetensors", result["seed"])
        settings = _settings(steps, result["seed"])
        _fill_published_random(result["rows"], result["seconds"], init, settings, imp_targets)
    return result


def _trained(work: Path, init: str, method: str, sparsity: float, settings) -> list:
    output = str(work / f"{method}-{sparsity}.safetensors")
    report = _prune(init, method, "global", sparsity, output, settings, {})
    return _both(report.training)


# --- driver -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2, help="seeds run at once (processes)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--quick", action="store_true", help="300 steps, IMP to 0.92, PaI at 0.9")
    parser.add_argument("--json", type=Path, help="save the raw per-seed results")
    parser.add_argument(
        "--from-json", type=Path, nargs="+", help="print the table of saved runs (--json), pooled"
    )
    parser.add_argument(
        "--fill", action="store_true", help="with --from-json: compute the rows those runs lack"
    )
    parser.add_argument("--rate", type=float, default=RATE, help="IMP's --rate per round")
    parser.add_argument("--scope", default=SCOPE, help="IMP's --scope: global or layer")
    parser.add_argument("--last-layer", default=LAST_LAYER, help="IMP's --last-layer")
    parser.add_argument("--one-seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = 300 if args.quick else args.steps
    imp_targets = [0.8, 0.92] if args.quick else [0.8, 0.92, 0.96, 0.98]
    others = [0.9] if args.quick else [0.9, 0.99]
    if args.one_seed is not None:
        imp = (args.rate, args.scope, args.last_layer)
        json.dump(run_seed(args.one_seed, steps, imp_targets, others, imp), sys.stdout)
        return 0
    started = time.perf_counter()
    if args.from_json:
        results = [run for path in args.from_json for run in json.loads(path.read_text())]
        if args.fill:
            results = [_fill_missing(run, steps, imp_targets) for run in results]
    else:
        results = _run_all(args)
    wall = None if args.from_json else time.perf_counter() - started
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    ok = _print_table(results, imp_targets, others, steps, wall, args)
    return 0 if ok or args.quick else 1


def _run_all(args) -> list[dict]:
    """One child process per seed, ``--jobs`` at a time."""
    pending, running, results = list(args.seeds), [], []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            command = [sys.executable, __file__, *_child_args(args), "--one-seed", str(seed)]
            running.append(subprocess.Popen(command, stdout=subprocess.PIPE))
        process = running.pop(0)
        out, _ = process.communicate()
        if process.returncode:
            raise SystemExit(f"a seed failed (exit {process.returncode})")
        results.append(json.loads(out))
    return sorted(results, key=lambda r: r["seed"])


def _child_args(args) -> list[str]:
    imp = ["--rate", str(args.rate), "--scope", args.scope, "--last-layer", args.last_layer]
    return ["--steps", str(args.steps), *imp] + (["--quick"] if args.quick else [])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _print_table(
    results: list[dict], imp_targets, others, steps: int, wall: float | None, args
) -> bool:
    seeds = [r["seed"] for r in results]
    chain = results[0].get("imp", {})

    def mean(row: str, sparsity: float, best: bool = True) -> float:
        return 100 * _mean([r["rows"][row][str(sparsity)][int(best)] for r in results])

    print(f"MNIST-1D, MLP {WIDTHS}, Adam lr 0.02, {steps} steps of 100; seeds {seeds}")
    print(
        f"IMP: --rate {chain.get('rate')} --scope {chain.get('scope')} --last-layer "
        f"{chain.get('last_layer')}, rewound to init each round"
    )
    print(
        "test accuracy %, mean over seeds; best = the best of the training's test evaluations "
        "(one per epoch),\nlike the published max_acc (two trials, Greydanus 2020); final = the "
        "last weights\n"
    )
    print(
        f"{'sparsity':>8} | {'IMP':>5} {'final':>5} {'published':>11} | {'random':>6} "
        f"{'published':>11} | {'gap':>5} {'pub. gap':>8} | {'rnd w/o b':>9} {'gap':>5} | IMP target"
    )
    pub = PUBLISHED[0.0][0]
    print(
        f"{'0 dense':>8} | {mean('dense', 0.0):5.1f} {mean('dense', 0.0, False):5.1f} "
        f"{pub[0]:5.1f}/{pub[1]:4.1f} |"
    )
    ok = True
    for s in imp_targets:
        imp, rnd, own = mean("imp", s), mean(PUBLISHED_RANDOM, s), mean("random", s)
        pub_imp, pub_rnd = PUBLISHED[s]
        gap, pub_gap = imp - rnd, _mean(pub_imp) - _mean(pub_rnd)
        close = abs(imp - _mean(pub_imp)) <= 4
        gap_ok = s < 0.9 or gap >= 5
        ok = ok and close and gap_ok
        verdict = ("ok" if close else "MISSED (>4 pts)") + ("" if gap_ok else ", gap < 5")
        print(
            f"{s:8.2f} | {imp:5.1f} {mean('imp', s, False):5.1f} {pub_imp[0]:5.1f}/{pub_imp[1]:4.1f}"
            f" | {rnd:6.1f} {pub_rnd[0]:5.1f}/{pub_rnd[1]:4.1f} | {gap:5.1f} {pub_gap:8.1f} | "
            f"{own:9.1f} {imp - own:5.1f} | {verdict}"
        )
    print(
        "random: weights and biases masked, as the published baseline; rnd w/o b: prunecli's "
        "random (biases kept), and IMP's gap to it (all best-of-evaluations)"
    )
    rest = [label for label, _, _ in AT_INIT] + TRAINING
    heads = " | ".join(f"{s:>5} best/final" for s in others)
    print(f"\n{'method':>18} | {heads} | seconds/seed")
    for row in rest:
        cells = " | ".join(f"{mean(row, s):10.1f}/{mean(row, s, False):5.1f}" for s in others)
        secs = _mean([r["seconds"][row] for r in results])
        print(f"{row:>18} | {cells} | {secs:7.0f}")
    imp_secs = _mean([r["seconds"]["imp"] for r in results])
    whole = f"; whole run {wall:.0f} s wall" if wall else ""
    print(f"\nIMP chain {imp_secs:.0f} s/seed{whole}")
    print("targets:", "met" if ok else "NOT met")
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
