"""`prunecli sweep` on a causal LM: Wanda's and SparseGPT's qualitative result (Sun et al. 2023,
Table 2; Frantar & Alistarh 2023, Fig. 1), perplexity against sparsity.

A small Llama-shaped model is trained here on the English text that ships with Python
(``pydoc_data.topics``, the last 10% held out; bench_llm.py's model and tokenizer), then one
command compares the criteria, calibrating on the training text and measuring the held-out text:

  prunecli sweep dense/ --methods magnitude,wanda,sparsegpt --sparsities 0.5,0.6,0.7,0.8,2:4,4:8 \\
    --data heldout.txt --calibration train.txt --samples 64 --seq-len 128 --batch-size 16 \\
    -o sweep-lm.json --plot sweep-lm.png

The script prints the table, saves the plot, and checks one cell independently: that run pruned
with `prunecli prune` and its perplexity computed here with transformers alone
(``from_pretrained`` and exp(mean NLL) over the same 128-token windows). It also times the sweep
against the same runs as separate `prunecli prune` + `prunecli eval` processes (``--apart``).

Usage (from the repository root):

  python benchmarks/bench_sweep_lm.py                  # 4 blocks, width 128, 700 steps
  python benchmarks/bench_sweep_lm.py --quick          # 2 blocks, width 64, 250 steps
  python benchmarks/bench_sweep_lm.py --out /tmp/lm --apart

Exit status 0 when, at every sparsity from 0.6 on, wanda's and sparsegpt's perplexity are below
magnitude's and the independent check agrees to 1e-4 (relative); 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_llm import SEQ, corpus, perplexity, train_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METHODS = "magnitude,wanda,sparsegpt"
SPARSITIES = "0.5,0.6,0.7,0.8,2:4,4:8"


def prunecli(*args: str) -> float:
    """Run ``python -m prunecli ARGS`` as a user would; its wall time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "prunecli", *args], check=True, env=env)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-sweep-lm"))
    parser.add_argument("--quick", action="store_true", help="smaller model, fewer steps")
    parser.add_argument("--steps", type=int, default=0, help="training steps (700; quick 250)")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--samples", type=int, default=64, help="calibration windows")
    parser.add_argument("--sparsities", default=SPARSITIES)
    parser.add_argument("--check", default="wanda:0.7", help="the cell checked independently")
    parser.add_argument("--apart", action="store_true", help="also time separate processes")
    args = parser.parse_args()
    torch.set_num_threads(2)

    args.out.mkdir(parents=True, exist_ok=True)
    train, held_out = corpus(args.out)
    heldout = args.out / "heldout.txt"
    heldout.write_text(held_out, encoding="utf-8")
    dense = args.out / "dense"
    if not (dense / "config.json").is_file():
        train_model(
            args.out, train, args.quick, args.steps or (250 if args.quick else 700), args.vocab
        )
    report, plot = args.out / "sweep-lm.json", args.out / "sweep-lm.png"
    windows = ["--samples", str(args.samples), "--seq-len", str(SEQ)]
    sweep_wall = prunecli(
        "sweep", str(dense), "--methods", METHODS, "--sparsities", args.sparsities,
        "--data", str(heldout), "--calibration", str(train), *windows, "--batch-size", "16",
        "-o", str(report), "--plot", str(plot), "--force",
    )  # fmt: skip
    document = json.loads(report.read_text())
    cells = {(r["method"], r["pattern"] or r["sparsity"]): r["mean"] for r in document["summary"]}
    sparsities = document["settings"]["sparsities"]
    levels = [*sparsities, *document["settings"]["patterns"]]

    method, sparsity = args.check.split(":")
    sparsity = float(sparsity)
    apart = args.out / "apart"
    calibration = ["--data", str(train), *windows] if method in ("wanda", "sparsegpt") else []
    prunecli(
        "prune", str(dense), "--method", method, "--sparsity", str(sparsity), *calibration,
        "-o", str(apart), "-q", "--force",
    )  # fmt: skip
    independent = perplexity(apart, held_out, dense)
    swept = cells[(method, sparsity)]
    agreement = abs(independent - swept) / independent

    print(f"\n{document['model']}: held-out perplexity ({SEQ}-token windows), "
          f"dense {document['dense']['perplexity']:.2f}; calibration {args.samples} windows of "
          f"the training text\n")  # fmt: skip
    print("| method | " + " | ".join(str(level) for level in levels) + " |")
    print("|---|" + "---:|" * len(levels))
    for name in METHODS.split(","):
        print(f"| {name} | " + " | ".join(f"{cells[(name, v)]:.2f}" for v in levels) + " |")
    print(f"\nsweep: {len(document['runs'])} runs in {sweep_wall:.0f} s (one process)")
    print(f"check: {method} at {sparsity:g} through `prune` + transformers alone: "
          f"{independent:.4f}, the sweep's {swept:.4f} (relative difference {agreement:.1e})")  # fmt: skip
    if args.apart:
        wall = 0.0
        for name in METHODS.split(","):
            for level in levels:
                extra = ["--data", str(train), *windows] if name != "magnitude" else []
                option = "--pattern" if isinstance(level, str) else "--sparsity"
                wall += prunecli(
                    "prune", str(dense), "--method", name, option, str(level), *extra,
                    "-o", str(apart), "-q", "--force",
                )  # fmt: skip
                wall += prunecli(
                    "eval", str(apart), "--data", str(heldout), "--seq-len", str(SEQ),
                    "--batch-size", "16", "-q",
                )  # fmt: skip
        print(f"apart: the same runs as `prune` + `eval` processes: {wall:.0f} s "
              f"({wall / sweep_wall:.2f}× the sweep)")  # fmt: skip
    print(f"plot: {plot}")
    beaten = all(
        cells[(name, s)] < cells[("magnitude", s)]
        for name in ("wanda", "sparsegpt")
        for s in sparsities
        if s >= 0.6
    )
    return 0 if beaten and agreement <= 1e-4 and math.isfinite(independent) else 1


if __name__ == "__main__":
    sys.exit(main())
