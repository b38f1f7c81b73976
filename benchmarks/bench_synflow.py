"""SynFlow on the zoo's vgg16 (CIFAR input 3x32x32): prunecli vs the reference code's way.

The target (project issue 3): 100 iterations to sparsity 0.999 take prunecli at most half the
wall time of a baseline written the way the authors' code (ganguli-lab/Synaptic-Flow) works,
with the same number of kept weights. The baseline, per iteration:

  * a fresh copy of the model, in float32, linearised by taking |·| of every parameter and
    buffer (biases and BatchNorm statistics included, as the reference does);
  * the mask applied as weight·mask, one forward pass on ones(1, 3, 32, 32), sum, backward;
  * scores |θ ⊙ ∂R/∂θ|, concatenated, one full ``torch.kthvalue`` for the threshold, and the
    reference's ``score <= threshold`` → 0 rule (ties at the threshold are all pruned).

Both routes run in this process, one after the other, on the same initial weights; only the
pruning itself is timed (prunecli's includes building its path network).

Iterative SynFlow amplifies rounding: a float32 and a float64 run of the same algorithm share
only part of their kept weights after 100 rounds. So the script also checks like with like:

  * single round: prunecli's scores, normalised to sum 1, against a plain float64 autograd
    computation written here (weights |θ|, biases zero, BatchNorm folded to |γ|/√(var+ε) by
    hand) — largest relative difference, target 1e-6;
  * the kept-weight overlap with the baseline run in float64 after ``--overlap-iterations``.

Usage (from the repository root):

  python benchmarks/bench_synflow.py                      # 100 iterations, sparsity 0.999
  python benchmarks/bench_synflow.py --iterations 20      # quick run
  python benchmarks/bench_synflow.py --threads 1 --json synflow.json

Exit status 0 when prunecli takes at most half the baseline's time, keeps exactly
round((1 - S)·N) weights and agrees with the float64 computation; 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from prunecli.criteria.synflow import SynFlow
from prunecli.io import safetensors as st
from prunecli.models.loaded import META_ARCH, LoadedModel, load_model
from prunecli.models.zoo import build_arch
from prunecli.pruning.criterion import Inputs, ScoreContext
from prunecli.pruning.loop import prune_model
from prunecli.pruning.prunable import select_prunable

ARCH = "vgg16"
INPUT_SHAPE = (3, 32, 32)
TARGET_RATIO = 0.5
TARGET_AGREEMENT = 1e-6
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

Masks = dict[str, torch.Tensor]


def load_vgg16(folder: Path, seed: int) -> tuple[LoadedModel, list[str]]:
    """A freshly initialised vgg16 written as `prunecli init` does and loaded back."""
    torch.manual_seed(seed)
    tensors = dict(build_arch(ARCH).module.state_dict())
    buffer = io.BytesIO()
    st.write(buffer, tensors, {META_ARCH: ARCH})
    path = folder / f"{ARCH}-{seed}.safetensors"
    path.write_bytes(buffer.getvalue())
    model = load_model(str(path))
    return model, select_prunable(model)


# --------------------------------------------------------------------------- the baseline


def reference_synflow(
    module: nn.Module, names: list[str], density: float, iterations: int, dtype: torch.dtype
) -> Masks:
    """SynFlow as ganguli-lab/Synaptic-Flow computes it (Pruners/pruners.py, prune.py)."""
    masks = {name: torch.ones_like(p, dtype=dtype) for name, p in module.named_parameters()}
    masks = {name: masks[name] for name in names}
    zero, one = torch.tensor([0.0], dtype=dtype), torch.tensor([1.0], dtype=dtype)
    for epoch in range(iterations):
        net = copy.deepcopy(module).to(dtype).eval()  # a fresh copy every iteration
        params = dict(net.named_parameters())
        with torch.no_grad():
            for tensor in net.state_dict().values():  # linearise: |·| of everything
                tensor.abs_()
            for name in names:  # the reference's masked layers compute weight·mask
                params[name].mul_(masks[name])
        output = net(torch.ones([1, *INPUT_SHAPE], dtype=dtype))
        torch.sum(output).backward()
        scores = {
            name: torch.clone(params[name].grad * params[name]).detach().abs_() for name in names
        }
        global_scores = torch.cat([torch.flatten(v) for v in scores.values()])
        sparse = density ** ((epoch + 1) / iterations)  # the reference's "sparsity" is a density
        k = int((1.0 - sparse) * global_scores.numel())
        if not k < 1:
            threshold, _ = torch.kthvalue(global_scores, k)
            for name in names:
                masks[name] = torch.where(scores[name] <= threshold, zero, one)
    return {name: mask != 0 for name, mask in masks.items()}


def plain_float64_scores(module: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """One SynFlow round by plain autograd: |θ|, biases zero, BatchNorm → |γ|/√(var+ε) by hand."""
    net = copy.deepcopy(module).double().eval()
    params = dict(net.named_parameters())
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, _BATCHNORMS):  # (x - 0)/√(var+ε)·|γ| + 0
                layer.running_mean.zero_()
                layer.weight.abs_()
                layer.bias.zero_()
        for name, param in params.items():
            if name in names:
                param.abs_()
            elif name.endswith("bias"):
                param.zero_()
    output = net(torch.ones([1, *INPUT_SHAPE], dtype=torch.float64))
    grads = torch.autograd.grad(output.sum(), [params[name] for name in names])
    return {name: (params[name] * g).abs().detach() for name, g in zip(names, grads, strict=True)}


# --------------------------------------------------------------------------- measurements


def timed(run):  # noqa: ANN001, ANN201
    """``run()``'s result, wall seconds and CPU seconds (user + system, this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, (time.perf_counter() - wall, time.process_time() - cpu)


def prunecli_masks(
    folder: Path, seed: int, sparsity: float, iterations: int
) -> tuple[Masks, float]:
    model, names = load_vgg16(folder, seed)
    inputs = Inputs(INPUT_SHAPE)
    _, seconds = timed(
        lambda: prune_model(model, names, SynFlow(), sparsity, iterations=iterations, inputs=inputs)
    )
    return {name: model.tensors[name] != 0 for name in names}, seconds


def baseline_masks(
    folder: Path, seed: int, sparsity: float, iterations: int, dtype: torch.dtype
) -> tuple[Masks, float]:
    model, names = load_vgg16(folder, seed)
    assert model.module is not None
    return timed(lambda: reference_synflow(model.module, names, 1.0 - sparsity, iterations, dtype))


def kept(masks: Masks) -> int:
    return sum(int(mask.sum()) for mask in masks.values())


def overlap(a: Masks, b: Masks) -> float:
    """Shared kept weights, as a fraction of ``a``'s kept weights."""
    shared = sum(int((a[name] & b[name]).sum()) for name in a)
    return shared / max(1, kept(a))


def single_round_agreement(folder: Path, seed: int) -> float:
    """Largest relative difference between prunecli's and plain float64 scores, both summing to 1."""
    model, names = load_vgg16(folder, seed)
    assert model.module is not None
    ours = SynFlow().score(ScoreContext(model, names, inputs=Inputs(INPUT_SHAPE)))
    plain = plain_float64_scores(model.module, names)
    ours_total = sum(float(ours[name].sum()) for name in names)
    plain_total = sum(float(plain[name].sum()) for name in names)
    worst = 0.0
    for name in names:
        a, b = ours[name] / ours_total, plain[name] / plain_total
        scale = b.abs().clamp_min(torch.finfo(torch.float64).tiny)
        worst = max(worst, float(((a - b).abs() / scale).max()))
    return worst


def run(args: argparse.Namespace, folder: Path) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    sparsity, iterations, seed = args.sparsity, args.iterations, args.seed
    model, names = load_vgg16(folder, seed)
    total = sum(model.tensors[name].numel() for name in names)
    target_kept = total - round(sparsity * total)
    print(
        f"{ARCH}: {total:,} prunable weights, sparsity {sparsity} → keep {target_kept:,}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        file=sys.stderr,
    )

    # repeats alternate between the routes, so that a busy spell on the machine hits both
    ours_runs, base_runs = [], []
    for repeat in range(args.repeat):
        print(
            f"run {repeat + 1}/{args.repeat}: prunecli, {iterations} iterations ...",
            file=sys.stderr,
        )
        ours_runs.append(prunecli_masks(folder, seed, sparsity, iterations))
        print(f"run {repeat + 1}/{args.repeat}: baseline float32 ...", file=sys.stderr)
        base_runs.append(baseline_masks(folder, seed, sparsity, iterations, torch.float32))
    ours, ours_t = ours_runs[0][0], min((times for _, times in ours_runs), key=lambda t: t[0])
    base, base_t = base_runs[0][0], min((times for _, times in base_runs), key=lambda t: t[0])
    short = args.overlap_iterations
    print(f"prunecli and baseline float64, {short} iterations ...", file=sys.stderr)
    ours_short, ours_short_t = prunecli_masks(folder, seed, sparsity, short)
    base64, base64_t = baseline_masks(folder, seed, sparsity, short, torch.float64)
    print("single-round agreement ...", file=sys.stderr)
    agreement = single_round_agreement(folder, seed)

    def row(route: str, rounds: int, masks: Masks, times, reference: Masks, base_times=None):  # noqa: ANN001, ANN202
        return {
            "route": route,
            "iterations": rounds,
            "wall_s": times[0],
            "cpu_s": times[1],
            "kept": kept(masks),
            "wall_ratio": times[0] / base_times[0] if base_times else None,
            "cpu_ratio": times[1] / base_times[1] if base_times else None,
            "overlap": overlap(reference, masks),
        }

    rows = [
        row("prunecli float64", iterations, ours, ours_t, ours, base_t),
        row("baseline float32", iterations, base, base_t, ours, base_t),
        row("prunecli float64", short, ours_short, ours_short_t, ours_short, base64_t),
        row("baseline float64", short, base64, base64_t, ours_short, base64_t),
    ]
    ratio = ours_t[0] / base_t[0]
    return {
        "arch": ARCH,
        "prunable": total,
        "sparsity": sparsity,
        "target_kept": target_kept,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "ratio": ratio,
        "single_round_max_rel_diff": agreement,
        "passed": ratio <= TARGET_RATIO
        and kept(ours) == target_kept
        and agreement <= TARGET_AGREEMENT,
    }


def print_table(result: dict) -> None:
    header = (
        f"{'route':<18} {'iters':>5} {'wall s':>7} {'cpu s':>7} {'kept':>7} "
        f"{'wall/base':>9} {'cpu/base':>8} {'overlap':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        print(
            f"{row['route']:<18} {row['iterations']:>5} {row['wall_s']:>7.1f} {row['cpu_s']:>7.1f} "
            f"{row['kept']:>7,} {row['wall_ratio']:>9.2f} {row['cpu_ratio']:>8.2f} "
            f"{row['overlap']:>8.2%}"
        )
    print(
        f"\n{result['threads']} threads. Target kept weights {result['target_kept']:,}; wall ratio "
        f"{result['ratio']:.2f} (target <= {TARGET_RATIO}). Single round: largest relative "
        f"difference from plain float64 autograd {result['single_round_max_rel_diff']:.1e} "
        f"(target <= {TARGET_AGREEMENT:g}).\n"
        "ratios: against the baseline row of the same iterations; overlap: kept weights shared "
        "with the prunecli run of the same iterations, as a fraction of prunecli's."
    )
    print("PASS" if result["passed"] else "FAIL")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sparsity", type=float, default=0.999)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--overlap-iterations", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed of vgg16")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="time the fastest of N runs per route, alternating"
    )
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        result = run(args, Path(folder))
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
