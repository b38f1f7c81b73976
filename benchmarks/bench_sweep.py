"""`prunecli sweep` on digits: SynFlow's qualitative result (Tanaka et al. 2020, Fig. 1 and 6).

At extreme compression, pruning at initialisation by global magnitude collapses (whole layers
are cut, so the network's accuracy falls to chance) while SynFlow keeps every layer connected
and stays above a random mask of the same sparsity. This script runs exactly the README's
command on a freshly initialised MLP (``prunecli init``), prints the table and saves the plot:

  prunecli sweep init.safetensors --methods magnitude,random,snip,synflow \\
    --sparsities 0.5,0.8,0.9,0.95,0.98,0.99,0.995 --data digits --retrain-steps 500 \\
    --seeds 0,1 -o sweep.json --plot sweep.png

Usage (from the repository root):

  python benchmarks/bench_sweep.py                         # writes bench-sweep/{sweep.json,sweep.png}
  python benchmarks/bench_sweep.py --jobs 4 --steps 300 --out /tmp/sweep

Exit status 0 when, at the highest sparsity, SynFlow's mean accuracy is above random's and
magnitude-at-init's is below SynFlow's by at least ``--margin`` (default 10 points); 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

WIDTHS = [64, 256, 256, 10]  # digits: 8×8 images, 10 classes
SPARSITIES = "0.5,0.8,0.9,0.95,0.98,0.99,0.995"
METHODS = "magnitude,random,snip,synflow"


def prunecli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "prunecli", *args], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-sweep"))
    parser.add_argument("--steps", type=int, default=500, help="retraining steps per run")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--sparsities", default=SPARSITIES)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--margin", type=float, default=0.10)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    init = args.out / "init.safetensors"
    report, plot = args.out / "sweep.json", args.out / "sweep.png"
    prunecli("init", "mlp", "--arch-kwargs", json.dumps({"widths": WIDTHS}), "-o", str(init),
             "--force", "-q")  # fmt: skip
    prunecli(
        "sweep", str(init), "--methods", METHODS, "--sparsities", args.sparsities,
        "--data", "digits", "--retrain-steps", str(args.steps), "--seeds", args.seeds,
        "--jobs", str(args.jobs), "-o", str(report), "--plot", str(plot), "--force",
    )  # fmt: skip
    document = json.loads(report.read_text())
    top = max(document["settings"]["sparsities"])
    means = {row["method"]: row["mean"] for row in document["summary"] if row["sparsity"] == top}
    print(f"\nat sparsity {top}: " + ", ".join(f"{m} {v:.1%}" for m, v in means.items()))
    print(f"plot: {plot}")
    above_random = means["synflow"] > means["random"]
    collapsed = means["magnitude"] <= means["synflow"] - args.margin
    print(f"synflow above random: {above_random}; magnitude collapsed: {collapsed}")
    return 0 if above_random and collapsed else 1


if __name__ == "__main__":
    sys.exit(main())
