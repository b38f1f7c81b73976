"""Structured pruning: is the speed-up real, and what does it cost? (issue 15's targets)

Every model is pruned by the real CLI, as a user would (``python -m prunecli prune ...
--granularity channel|neuron``, one child process each), and timed side by side with its
dense original in this process:

1. **CNN speed**: ``vgg16`` and ``resnet20`` (CIFAR shape, batch 32) at 0.5 channel
   sparsity (``--scope layer`` without and with ``--round-to 8``, ``--scope global --round-to 8``). MACs ratio from the
   prune report; latency ratio (median of repeats) in PyTorch and in onnxruntime (the
   ``prunecli export --to onnx`` of each). Target: latency ratio at most 1.3 × the MACs ratio.
2. **BERT speed**: a 6-block BERT-base-shaped encoder (random init, hidden 768, FFN 3072)
   with half its FFN neurons removed (``--granularity neuron --include '*intermediate*'
   '*output.dense*'``), loaded back with plain ``AutoModel.from_pretrained``; latency ratio
   at batch 8 × 128 tokens. Target: at most 0.8.
3. **Reconstruction**: the small causal LM of ``bench_llm.py`` (trained here, 300 steps), 25%
   and 50% of its FFN neurons removed by ``wanda`` and ``magnitude`` with ``--data``: held-out
   perplexity with and without ``--reconstruct``.
4. **Accuracy**: ``resnet20`` trained on scikit-learn's digits (8×8 upsampled to 3×32×32),
   pruned at 0.5 channel sparsity (taylor), then retrained; against unstructured magnitude at
   the same parameter count, pruned and retrained the same way.

Usage (from the repository root):

  python benchmarks/bench_structured.py              # all parts
  python benchmarks/bench_structured.py --parts cnn,bert --repeats 30
  python benchmarks/bench_structured.py --quick      # fewer steps and repeats
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cli(*args: object) -> dict:
    """Run ``prunecli ARGS --json`` in a child; its JSON report."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-m", "prunecli", *map(str, args), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"prunecli {' '.join(map(str, args))} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def paired_ms(first, second, repeats: int, warmup: int = 3) -> tuple[float, float]:  # noqa: ANN001
    """Median ms of ``first()`` and ``second()``, timed in alternation (drift hits both)."""
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for run, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            run()
            bucket.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[0]), 1000 * statistics.median(times[1])


def torch_runner(path: Path, batch: int):  # noqa: ANN201
    from prunecli.models.loaded import load_model

    module = load_model(str(path)).module.eval()
    x = torch.randn(batch, 3, 32, 32)

    def run() -> None:
        with torch.inference_mode():
            module(x)

    return run


def ort_runner(path: Path, batch: int):  # noqa: ANN201
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = torch.randn(batch, 3, 32, 32).numpy()
    return lambda: session.run(None, {name: x})


def cnn(workdir: Path, args: argparse.Namespace) -> list[dict]:
    rows = []
    cases = [("vgg16", "layer", None), ("vgg16", "layer", 8), ("vgg16", "global", 8),
             ("resnet20", "layer", None), ("resnet20", "layer", 8), ("resnet20", "global", 8)]  # fmt: skip
    for arch, scope, round_to in cases:
        dense = workdir / f"{arch}.safetensors"
        if not dense.exists():
            cli("init", arch, "-o", dense)
            cli("export", dense, "--to", "onnx", "-o", dense.with_suffix(".onnx"))
        slim = workdir / f"{arch}-{scope}-{round_to}.safetensors"
        rounding = ("--round-to", round_to) if round_to else ()
        report = cli("prune", dense, "-m", "magnitude", "--granularity", "channel", "-s", "0.5",
                     "--scope", scope, *rounding, "-o", slim, "--force")  # fmt: skip
        cli("export", slim, "--to", "onnx", "-o", slim.with_suffix(".onnx"), "--force")
        macs = report["cost"]["macs_ratio"]
        label = f"{arch} {scope}" + (f" /{round_to}" if round_to else "")
        row = {"model": label, "params": report["cost"]["params_ratio"], "macs": macs}
        for engine, runner, suffix in (
            ("torch", torch_runner, ".safetensors"),
            ("ort", ort_runner, ".onnx"),
        ):
            base, small = paired_ms(
                runner(dense.with_suffix(suffix), args.batch),
                runner(slim.with_suffix(suffix), args.batch),
                args.repeats,
            )
            row[f"{engine}_ms"] = (base, small)
            row[engine] = small / base
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def bert(workdir: Path, args: argparse.Namespace) -> dict:
    from transformers import AutoModel, BertConfig, BertModel

    dense = workdir / "bert"
    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=6, hidden_size=768, intermediate_size=3072,
                        num_attention_heads=12, vocab_size=1000)  # fmt: skip
    BertModel(config).eval().save_pretrained(dense)
    slim = workdir / "bert-slim"
    # half the FFN neurons: the FFN is 2·768·3072 of the blocks' 12·768² linear weights (2/3)
    report = cli("prune", dense, "-m", "magnitude", "--granularity", "neuron", "-s", f"{1 / 3:.6f}",
                 "-o", slim, "--force")  # fmt: skip
    ids = torch.randint(0, 1000, (args.bert_batch, 128), generator=torch.Generator().manual_seed(0))
    models = [AutoModel.from_pretrained(f).eval() for f in (dense, slim)]  # plain transformers

    def runner(model):  # noqa: ANN001, ANN202
        def run() -> None:
            with torch.inference_mode():
                model(input_ids=ids)

        return run

    base, small = paired_ms(runner(models[0]), runner(models[1]), max(5, args.repeats // 2))
    times = {"dense": base, "slim": small}
    kept = {g["after"] for g in report["structure"]["groups"]}
    row = {"kept": sorted(kept), "dense_ms": times["dense"], "slim_ms": times["slim"],
           "ratio": times["slim"] / times["dense"], "params": report["cost"]["params_ratio"]}  # fmt: skip
    print(json.dumps(row), file=sys.stderr)
    return row


def reconstruction(workdir: Path, args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_llm import corpus, perplexity, train_model

    train, held_out = corpus(workdir)
    dense = train_model(
        workdir,
        train,
        args.quick,
        250 if args.quick else args.lm_steps,
        1024 if args.quick else 4096,
    )
    config = json.loads((dense / "config.json").read_text())
    h, i = config["hidden_size"], config["intermediate_size"]
    ffn, attn = 3 * h * i, 4 * h * h
    row = {"dense": perplexity(dense, held_out, dense), "cuts": {}}
    for fraction in args.ffn_fractions:
        sparsity = (
            fraction * ffn / (ffn + attn)
        )  # that share of the FFN neurons, of the blocks' weights
        cut = {"sparsity": sparsity}
        runs = {
            "wanda, reconstructed": ("-m", "wanda", "--data", train, "--reconstruct", *CALIBRATION),
            "wanda, not reconstructed": (
                "-m",
                "wanda",
                "--data",
                train,
                "--no-reconstruct",
                *CALIBRATION,
            ),
            "magnitude, reconstructed": ("-m", "magnitude", "--data", train, *CALIBRATION),
            "magnitude": ("-m", "magnitude"),
        }
        for label, options in runs.items():
            out = workdir / f"{fraction}-{label.replace(', ', '-').replace(' ', '')}"
            cli(
                "prune",
                dense,
                *options,
                "--granularity",
                "neuron",
                "-s",
                f"{sparsity:.6f}",
                "-o",
                out,
                "--force",
            )
            cut[label] = perplexity(out, held_out, dense)
            print(fraction, label, cut[label], file=sys.stderr)
        row["cuts"][fraction] = cut
    return row


CALIBRATION = ("--samples", "64", "--seq-len", "128")


def digits32(path: Path) -> Path:
    """scikit-learn's digits, 8×8 upsampled to 32×32, three equal channels; 20% test split."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=32, mode="bilinear").repeat(1, 3, 1, 1)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    np.savez(
        path, x=x[train].numpy(), y=y[train].numpy(), x_test=x[test].numpy(), y_test=y[test].numpy()
    )
    return path


def accuracy(workdir: Path, args: argparse.Namespace) -> dict:
    data = digits32(workdir / "digits32.npz")
    steps = str(args.train_steps)
    dense = workdir / "r20-digits.safetensors"
    cli("init", "resnet20", "-o", workdir / "r20-init.safetensors", "--force")
    trained = cli("retrain", workdir / "r20-init.safetensors", "--data", data, "--steps", steps,
                  "--lr", "0.003", "-o", dense, "--force")  # fmt: skip
    row = {"dense": trained["training"]["test_accuracy"]}
    slim = workdir / "r20-slim.safetensors"
    pruned = cli("prune", dense, "-m", "taylor", "--granularity", "channel", "-s", "0.5", "--scope",
                 "layer", "--data", data, "-o", slim, "--force")  # fmt: skip
    kept = pruned["totals"]["prunable_params"]
    total = pruned["cost"]["original"]["params"]
    row["structured"] = _test_accuracy(slim, data)
    plain = workdir / "r20-slim-plain.safetensors"
    cli("prune", dense, "-m", "taylor", "--granularity", "channel", "-s", "0.5", "--scope", "layer",
        "--data", data, "--no-reconstruct", "-o", plain, "--force")  # fmt: skip
    row["structured, not reconstructed"] = _test_accuracy(plain, data)
    row["structured, retrained"] = cli("retrain", slim, "--data", data, "--steps", steps, "--lr", "0.003",
                                      "-o", workdir / "r20-slim-ft.safetensors", "--force")["training"]["test_accuracy"]  # fmt: skip
    dense_prunable = cli("inspect", dense)["totals"]["prunable_params"]
    sparsity = 1 - kept / dense_prunable
    sparse = workdir / "r20-sparse.safetensors"
    cli("prune", dense, "-m", "magnitude", "-s", f"{sparsity:.6f}", "-o", sparse, "--force")
    row["unstructured"] = _test_accuracy(sparse, data)
    row["unstructured, retrained"] = cli("retrain", sparse, "--data", data, "--steps", steps, "--lr", "0.003",
                                        "-o", workdir / "r20-sparse-ft.safetensors", "--force")["training"]["test_accuracy"]  # fmt: skip
    row["sparsity"] = sparsity
    row["params_ratio"] = pruned["cost"]["params"] / total
    print(json.dumps(row), file=sys.stderr)
    return row


@torch.inference_mode()
def _test_accuracy(path: Path, data: Path) -> float:
    import numpy as np

    from prunecli.models.loaded import load_model

    arrays = np.load(data)
    module = load_model(str(path)).module.eval()
    logits = module(torch.tensor(arrays["x_test"]))
    return float((logits.argmax(1) == torch.tensor(arrays["y_test"])).float().mean())


def show(results: dict) -> None:
    if "cnn" in results:
        print("\nCNN speed (batch 32, median ms; target: latency ratio <= 1.3 x MACs ratio)")
        print(
            f"{'model':<18}{'params':>8}{'MACs':>8}{'torch ms':>18}{'torch':>8}{'ort ms':>18}{'ort':>8}{'met':>6}"
        )
        for r in results["cnn"]:
            worst = max(r["torch"], r["ort"])
            met = "yes" if worst <= 1.3 * r["macs"] else "NO"
            t, o = r["torch_ms"], r["ort_ms"]
            print(f"{r['model']:<18}{r['params']:>8.2f}{r['macs']:>8.2f}{t[0]:>9.1f}→{t[1]:>7.1f}"
                  f"{r['torch']:>8.2f}{o[0]:>9.1f}→{o[1]:>7.1f}{r['ort']:>8.2f}{met:>6}")  # fmt: skip
    if "bert" in results:
        b = results["bert"]
        met = "yes" if b["ratio"] <= 0.8 else "NO"
        print(f"\nBERT 6 blocks, half the FFN neurons (kept {b['kept']}): {b['dense_ms']:.0f} → "
              f"{b['slim_ms']:.0f} ms, ratio {b['ratio']:.2f} (target <= 0.8: {met}); params {b['params']:.2f}x")  # fmt: skip
    if "lm" in results:
        r = results["lm"]
        print(
            f"\nReconstruction: FFN neurons removed, held-out perplexity (dense {r['dense']:.1f})"
        )
        labels = (
            "wanda, reconstructed",
            "wanda, not reconstructed",
            "magnitude, reconstructed",
            "magnitude",
        )
        print(f"{'FFN neurons removed':<22}" + "".join(f"{label:>26}" for label in labels))
        for fraction, cut in r["cuts"].items():
            print(f"{fraction:<22.0%}" + "".join(f"{cut[label]:>26.1f}" for label in labels))
    if "accuracy" in results:
        r = results["accuracy"]
        print(
            f"\nresnet20 on digits 32x32, test accuracy (same parameter count: {r['params_ratio']:.2f}x)"
        )
        for key in (
            "dense",
            "structured",
            "structured, retrained",
            "unstructured",
            "unstructured, retrained",
        ):
            print(f"  {key:<30}{r[key]:>8.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="cnn,bert,lm,accuracy")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bert-batch", type=int, default=8)
    parser.add_argument("--lm-steps", type=int, default=300)
    parser.add_argument(
        "--ffn-fractions", type=lambda t: [float(x) for x in t.split(",")], default=[0.25, 0.5]
    )
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.train_steps = 5, 60
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-structured-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    jobs = {"cnn": cnn, "bert": bert, "lm": reconstruction, "accuracy": accuracy}
    for part in parts:
        results[part] = jobs[part](workdir, args)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; files in {workdir}")
    show(results)


if __name__ == "__main__":
    main()
