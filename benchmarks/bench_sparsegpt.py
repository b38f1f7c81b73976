"""SparseGPT's per-layer solver: prunecli's against a faithful port of the reference loop.

The target (project issue 14): ``prunecli.calibration.sparsegpt.sparsegpt_prune`` takes at most
half the wall time of the reference code's loop on the same layers and calibration, with the
same layer output error (within 1%).

  reference  :func:`reference_fasterprune`: IST-DASLab ``sparsegpt.py`` ``SparseGPT.fasterprune``
             line by line (float32 throughout, per-column rank-1 updates over the rest of each
             128-column block, the per-block ``<=`` threshold), quantizer and CUDA calls left out.
  prunecli   ``sparsegpt_prune`` (float64 Hessian and factorisation, float32 updates in
             sub-blocks, exact count per layer).

Both get the same weight and the same Hessian H = 2XXᵀ/n of random correlated inputs X with
non-uniform column norms; the time covers the whole call (dead inputs, dampening, Cholesky,
loop). The relative layer output error is ‖(W − Ŵ)X‖_F / ‖WX‖_F on the calibration inputs.

Usage (from the repository root; threads follow torch's defaults or OMP_NUM_THREADS):

  python benchmarks/bench_sparsegpt.py                 # 512², 1376×512, 512×1376, 2048²
  python benchmarks/bench_sparsegpt.py --quick         # without the 2048² layer
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial

import torch


def reference_fasterprune(
    W: torch.Tensor,  # noqa: N803 (the reference's names)
    H: torch.Tensor,  # noqa: N803
    sparsity: float,
    prunen: int = 0,
    prunem: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> torch.Tensor:
    """The reference's ``fasterprune`` on a weight (out × in) and its Hessian; returns the new
    weight (float32). ``prunen`` counts the PRUNED weights per ``prunem``, as in the reference."""
    W = W.clone().float()  # noqa: N806
    H = H.clone().float()  # noqa: N806
    rows, columns = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    Losses = torch.zeros(rows)  # noqa: N806
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)  # noqa: N806
    H = torch.cholesky_inverse(H)  # noqa: N806
    H = torch.linalg.cholesky(H, upper=True)  # noqa: N806
    Hinv = H  # noqa: N806
    mask = None
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()  # noqa: N806
        Q1 = torch.zeros_like(W1)  # noqa: N806
        Err1 = torch.zeros_like(W1)  # noqa: N806
        Losses1 = torch.zeros_like(W1)  # noqa: N806
        Hinv1 = Hinv[i1:i2, i1:i2]  # noqa: N806
        if prunen == 0:
            if mask is not None:
                mask1 = mask[:, i1:i2]
            else:
                tmp = W1**2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
                thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
                mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1) == 1
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if prunen != 0 and i % prunem == 0:
                tmp = (
                    W1[:, i : (i + prunem)] ** 2
                    / (torch.diag(Hinv1)[i : (i + prunem)].reshape((1, -1))) ** 2
                )
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d**2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        Losses += torch.sum(Losses1, 1) / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def correlated_inputs(tokens: int, features: int, seed: int = 0) -> torch.Tensor:
    """Random inputs (tokens × features) with correlated features and uneven column norms."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(features, features, generator=generator) / math.sqrt(features)
    mixing += torch.eye(features)
    scales = torch.exp(torch.randn(features, generator=generator))  # log-normal column norms
    return (torch.randn(tokens, features, generator=generator) @ mixing) * scales


def layer_error(weight: torch.Tensor, pruned: torch.Tensor, inputs: torch.Tensor) -> float:
    """‖(W − Ŵ)X‖_F / ‖WX‖_F over the calibration inputs (rows of ``inputs``)."""
    dense = inputs.double() @ weight.double().T
    return float((dense - inputs.double() @ pruned.double().T).norm() / dense.norm())


def _timed(function, repeat: int) -> tuple[float, torch.Tensor]:
    best, result = math.inf, None
    for _ in range(repeat):
        began = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - began)
    return best, result


def run(shapes, tokens: int, sparsity: float, pattern, repeat: int) -> list[dict]:
    from prunecli.calibration.sparsegpt import sparsegpt_prune
    from prunecli.calibration.stats import Hessian

    results = []
    for rows, columns in shapes:
        generator = torch.Generator().manual_seed(rows * 7919 + columns)
        weight = torch.randn(rows, columns, generator=generator) / math.sqrt(columns)
        inputs = correlated_inputs(tokens, columns, seed=columns)
        stats = Hessian(columns)
        stats.add(inputs.reshape(-1, 128, columns) if tokens % 128 == 0 else inputs)
        hessian = stats.matrix()
        if pattern is None:
            ref_call = partial(reference_fasterprune, weight, hessian, sparsity)
            new_call = partial(sparsegpt_prune, weight, hessian, sparsity)
        else:
            n, m = pattern
            ref_call = partial(reference_fasterprune, weight, hessian, 0, m - n, m)
            new_call = partial(sparsegpt_prune, weight, hessian, pattern=pattern)
        ref_time, ref_weight = _timed(ref_call, repeat)
        new_time, (new_weight, _) = _timed(new_call, repeat)
        results.append(
            {
                "shape": f"{rows}x{columns}",
                "reference_s": ref_time,
                "prunecli_s": new_time,
                "ratio": new_time / ref_time,
                "reference_error": layer_error(weight, ref_weight, inputs),
                "prunecli_error": layer_error(weight, new_weight, inputs),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the 2048x2048 layer")
    parser.add_argument("--tokens", type=int, default=128 * 128, help="calibration tokens")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    shapes = [(512, 512), (1376, 512), (512, 1376)] + ([] if args.quick else [(2048, 2048)])
    print(
        f"threads {torch.get_num_threads()}, {args.tokens} calibration tokens, best of {args.repeat}"
    )
    header = f"{'layer':>10} {'mode':>6} {'reference s':>12} {'prunecli s':>11} {'ratio':>6}"
    print(header + f" {'ref error':>10} {'prunecli error':>15} {'error ratio':>12}")
    for mode, pattern in ((f"{args.sparsity:g}", None), ("2:4", (2, 4))):
        rows = run(shapes, args.tokens, args.sparsity, pattern, args.repeat)
        for row in rows:
            print(
                f"{row['shape']:>10} {mode:>6} {row['reference_s']:12.3f} {row['prunecli_s']:11.3f}"
                f" {row['ratio']:6.2f} {row['reference_error']:10.5f} {row['prunecli_error']:15.5f}"
                f" {row['prunecli_error'] / row['reference_error']:12.4f}"
            )
        # one Llama-shaped block of width 512, MLP 1376: q, k, v, o; gate, up; down
        times = {row["shape"]: (row["reference_s"], row["prunecli_s"]) for row in rows}
        count = {"512x512": 4, "1376x512": 2, "512x1376": 1}
        ref = sum(times[shape][0] * n for shape, n in count.items())
        new = sum(times[shape][1] * n for shape, n in count.items())
        print(f"{'block':>10} {mode:>6} {ref:12.3f} {new:11.3f} {new / ref:6.2f}")
    print("block: one Llama block of width 512 (4 x 512x512, 2 x 1376x512, 1 x 512x1376)")


if __name__ == "__main__":
    main()
