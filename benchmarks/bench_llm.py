"""Calibrated pruning of a causal LM: held-out perplexity, prune time and peak memory.

Project issue 14's quality and memory benchmarks, in one table per part, from one run.

Quality: a small Llama-shaped causal LM is trained here on CPU on the English text that ships
with Python (``pydoc_data.topics``; the last 10% held out), with a BPE tokenizer trained
locally with ``tokenizers``, and saved with ``save_pretrained``. The real CLI then prunes it, as
a user would (``python -m prunecli prune FOLDER --method M ... -o OUT -q``, one child process
each), with ``--data`` the training text: magnitude (``--scope layer``), wanda and sparsegpt at
50%, 2:4 and 70%, and at 70% both again with ``--scope owl`` (OWL's per-block sparsity, default
λ 0.08 and M 5). Each output folder is loaded with ``AutoModelForCausalLM.from_pretrained``
and its held-out perplexity is exp(mean token NLL) over non-overlapping 128-token windows.

Memory: a random-initialised Llama-shaped fp32 checkpoint of 16 blocks (``--memory-gb``, and
half that size to show the formula), saved sharded. Peak RSS (the child's own
``VmHWM``, sampled) of ``prunecli prune FOLDER --method wanda --sparsity 0.5 --data tokens.npz
--samples 8 --seq-len 128`` against a baseline child that loads the whole model with
``from_pretrained`` and runs the same calibration forward pass. Target: prunecli at most half
the checkpoint plus 300 MB.

Usage (from the repository root):

  python benchmarks/bench_llm.py                 # 4 blocks, width 128, 700 steps; 1 GB + 0.5 GB
  python benchmarks/bench_llm.py --quick         # 2 blocks, width 64, 250 steps; 0.5 GB + 0.25 GB
  python benchmarks/bench_llm.py --skip-memory   # quality only (--skip-quality: memory only)
  python benchmarks/bench_llm.py --workdir /tmp/llm --keep
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

SEQ = 128
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- children and their memory


def run_child(args: list[str], env: dict | None = None) -> tuple[float, float, int, str, float]:
    """Run ``args``; return (wall s, peak RSS MiB of that child alone, exit status, stderr,
    peak anonymous RSS MiB), from /proc/PID/status sampled every 10 ms: the peak RSS is the
    child's ``VmHWM`` (its own high-water mark since exec; ``ru_maxrss`` would not do, Linux
    carries the parent's RSS at fork into it), which counts file-backed pages too (safetensors
    shards mapped and read); the anonymous peak (``RssAnon``) leaves them out."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    start = time.perf_counter()
    anon, hwm = [0], [0]
    done = threading.Event()

    def poll(pid: int) -> None:
        while not done.is_set():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        anon[0] = max(anon[0], int(line.split()[1]))
                    elif line.startswith("VmHWM:"):
                        hwm[0] = max(hwm[0], int(line.split()[1]))
            except (OSError, ValueError):
                pass
            done.wait(0.01)

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=full_env)
        sampler = threading.Thread(target=poll, args=(proc.pid,), daemon=True)
        sampler.start()
        _, status, _ = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        err.seek(0)
        text = err.read().decode(errors="replace")
    return wall, hwm[0] / 1024, proc.returncode, text, anon[0] / 1024


def prune(folder: Path, out: Path, *options: str) -> float:
    args = [sys.executable, "-m", "prunecli", "prune", str(folder), *options, "-o", str(out)]
    wall, _, code, err, _ = run_child([*args, "-q", "--force"])
    if code != 0:
        raise SystemExit(f"prunecli failed ({code}): {' '.join(args)}\n{err[-2000:]}")
    return wall


# ---------------------------------------------------------------- quality


def corpus(workdir: Path) -> tuple[Path, str]:
    """The training text file (first 90%) and the held-out text (last 10%)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    cut = int(len(text) * 0.9)
    train = workdir / "train.txt"
    train.write_text(text[:cut], encoding="utf-8")
    return train, text[cut:]


def train_model(workdir: Path, train_text: Path, quick: bool, steps: int, vocab: int) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = workdir / "dense"
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train([str(train_text)], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    ids = torch.tensor(fast(train_text.read_text(encoding="utf-8"))["input_ids"])

    torch.manual_seed(0)
    width, blocks = (64, 2) if quick else (128, 4)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=width,
        intermediate_size=width * 2,
        num_hidden_layers=blocks,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=SEQ,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(0)
    batch = 16
    start = time.perf_counter()
    for step in range(steps):
        offsets = torch.randint(0, len(ids) - SEQ, (batch,), generator=gen)
        x = torch.stack([ids[o : o + SEQ] for o in offsets.tolist()])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step:4d}  loss {loss.item():.3f}", file=sys.stderr)
    print(
        f"trained {blocks} blocks, width {width}, vocab {len(fast)}, {len(ids)} tokens, "
        f"{steps} steps in {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@torch.no_grad()
def perplexity(folder: Path, held_out: str, tokenizer_folder: Path) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_folder)
    ids = torch.tensor(tok(held_out)["input_ids"])
    windows = ids[: len(ids) // SEQ * SEQ].view(-1, SEQ)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    total, count = 0.0, 0
    for chunk in windows.split(16):
        logits = model(input_ids=chunk).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum"
        )
        total += nll.item()
        count += chunk[:, 1:].numel()
    return math.exp(total / count)


def zero_fraction(folder: Path) -> float:
    """Zeros among the blocks' Linear weights (read back from the output)."""
    from safetensors import safe_open

    zeros = total = 0
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            for name in f.keys():
                if ".layers." in name and name.endswith("proj.weight"):
                    t = f.get_tensor(name)
                    zeros += int((t == 0).sum())
                    total += t.numel()
    return zeros / total


def quality(workdir: Path, args: argparse.Namespace) -> list[dict]:
    train, held_out = corpus(workdir)
    steps = args.steps or (250 if args.quick else 700)
    dense = train_model(workdir, train, args.quick, steps, args.vocab)
    data = ["--data", str(train), "--samples", str(args.samples), "--seq-len", str(SEQ)]
    rows = [{"mode": "dense", "method": "dense", "ppl": perplexity(dense, held_out, dense)}]
    modes = {
        "50%": ["--sparsity", "0.5"],
        "2:4": ["--pattern", "2:4"],
        "70%": ["--sparsity", "0.7"],
    }
    for mode, sel in modes.items():
        owl = ("owl (wanda)", "owl (sparsegpt)") if mode == "70%" else ()
        for method in ("magnitude", "wanda", "sparsegpt", *owl):
            out = workdir / f"{method.replace(' ', '')}-{mode.replace(':', 'of').replace('%', '')}"
            if method == "magnitude":
                scope = [] if mode == "2:4" else ["--scope", "layer"]
                wall = prune(dense, out, "--method", method, *sel, *scope)
            elif method.startswith("owl"):
                base = method[5:-1]  # "owl (wanda)" → wanda
                wall = prune(dense, out, "--method", base, *sel, "--scope", "owl", *data)
            else:
                wall = prune(dense, out, "--method", method, *sel, *data)
            ppl = perplexity(out, held_out, dense)
            rows.append(
                {
                    "mode": mode,
                    "method": method,
                    "ppl": ppl,
                    "wall": wall,
                    "zeros": zero_fraction(out),
                }
            )
            print(f"  {mode:>4} {method:<10} ppl {ppl:9.1f}  {wall:6.1f} s", file=sys.stderr)
            shutil.rmtree(out)
    return rows


# ---------------------------------------------------------------- memory

BASELINE = r"""
import sys, numpy, torch
from transformers import AutoModelForCausalLM
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
ids = torch.from_numpy(numpy.load(sys.argv[2])["input_ids"])[:, :128]
with torch.no_grad():
    for batch in ids.split(4):
        model(input_ids=batch)
"""


def memory_model(folder: Path, gigabytes: float, vocab: int = 1024, blocks: int = 16) -> dict:
    """A random Llama of ``blocks`` blocks, width chosen so that fp32 weighs ``gigabytes``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    target = gigabytes * 1e9 / 4  # parameters
    # per block 4h² (attention) + 3·h·(4h) (MLP); embeddings and head 2·V·h
    a, b = blocks * 16, 2 * vocab
    width = int((-b + math.sqrt(b * b + 4 * a * target)) / (2 * a)) // 64 * 64
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=blocks,
        num_attention_heads=width // 64,
        num_key_value_heads=width // 64,
        max_position_embeddings=SEQ,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder, max_shard_size="200MB")
    del model
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    return {"width": width, "params": params, "bytes": size}


def memory(workdir: Path, gigabytes: float, samples: int) -> dict:
    import numpy as np

    folder = workdir / f"random-{gigabytes}gb"
    info = memory_model(folder, gigabytes)
    tokens = workdir / "tokens.npz"
    gen = np.random.default_rng(0)
    np.savez(tokens, input_ids=gen.integers(0, 1024, size=(samples, SEQ), dtype=np.int64))
    out = workdir / "pruned"
    args = [sys.executable, "-m", "prunecli", "prune", str(folder), "--method", "wanda"]
    args += ["--sparsity", "0.5", "--data", str(tokens), "--samples", str(samples)]
    args += ["--seq-len", str(SEQ), "-o", str(out), "-q", "--force"]
    p_wall, p_rss, code, err, p_anon = run_child(args)
    if code != 0:
        raise SystemExit(f"prunecli failed ({code}):\n{err[-2000:]}")
    b_wall, b_rss, code, err, b_anon = run_child(
        [sys.executable, "-c", BASELINE, str(folder), str(tokens)]
    )
    if code != 0:
        raise SystemExit(f"baseline failed ({code}):\n{err[-2000:]}")
    _, torch_rss, _, _, torch_anon = run_child([sys.executable, "-c", "import torch, transformers"])
    shutil.rmtree(folder)
    shutil.rmtree(out)
    h = info["width"]
    block = (4 * h * h + 12 * h * h) * 4 / 2**20
    acts = 2 * samples * SEQ * h * 4 / 2**20
    info.update(
        gb=gigabytes,
        prunecli_rss=p_rss,
        prunecli_wall=p_wall,
        prunecli_anon=p_anon,
        baseline_anon=b_anon,
        import_anon=torch_anon,
        baseline_rss=b_rss,
        baseline_wall=b_wall,
        import_rss=torch_rss,
        block_mb=block,
        acts_mb=acts,
        target_mb=info["bytes"] / 2**20 / 2 + 300,
    )
    print(f"  {gigabytes} GB: prunecli {p_rss:.0f} MiB, baseline {b_rss:.0f} MiB", file=sys.stderr)
    return info


# ---------------------------------------------------------------- report


def report(rows: list[dict], mems: list[dict], args: argparse.Namespace) -> None:
    if rows:
        print(
            f"\nQuality (held-out perplexity, {SEQ}-token windows; prune = wall s of the CLI child)"
        )
        print("\n| mode | method | held-out ppl | prune wall s | zeros in blocks |")
        print("|---|---|---:|---:|---:|")
        for r in rows:
            wall = f"{r['wall']:.1f}" if "wall" in r else "-"
            zeros = f"{r['zeros']:.1%}" if "zeros" in r else "-"
            print(f"| {r['mode']} | {r['method']} | {r['ppl']:.1f} | {wall} | {zeros} |")
    if mems:
        print("\nMemory (wanda 0.5, peak RSS MiB of each child; target: checkpoint/2 + 300 MB)")
        print(
            "\n| checkpoint | width | params | prunecli MiB | prunecli s | baseline MiB "
            "| baseline s | target MiB | met | prunecli anon MiB | baseline anon MiB "
            "| one block + activations + import (anon) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
        for m in mems:
            met = "yes" if m["prunecli_rss"] <= m["target_mb"] else "NO"
            formula = (
                f"{m['block_mb']:.0f} + {m['acts_mb']:.0f} + {m['import_rss']:.0f} = "
                f"{m['block_mb'] + m['acts_mb'] + m['import_rss']:.0f} "
                f"({m['block_mb'] + m['acts_mb'] + m['import_anon']:.0f})"
            )
            print(
                f"| {m['bytes'] / 2**20:.0f} MiB | {m['width']} | {m['params'] / 1e6:.0f}M "
                f"| {m['prunecli_rss']:.0f} | {m['prunecli_wall']:.1f} | {m['baseline_rss']:.0f} "
                f"| {m['baseline_wall']:.1f} | {m['target_mb']:.0f} | {met} "
                f"| {m['prunecli_anon']:.0f} | {m['baseline_anon']:.0f} | {formula} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"quality": rows, "memory": mems}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller model, fewer steps, smaller checkpoints"
    )
    parser.add_argument(
        "--steps", type=int, default=0, help="training steps (default 700; 250 quick)"
    )
    parser.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary size")
    parser.add_argument("--samples", type=int, default=64, help="calibration windows for quality")
    parser.add_argument(
        "--memory-gb", type=float, default=0.0, help="largest checkpoint (default 1.0; 0.5 quick)"
    )
    parser.add_argument("--memory-samples", type=int, default=8)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--workdir", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", help="save the raw numbers to this file")
    parser.add_argument("--threads", type=int, default=2, help="torch threads here and in children")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.manual_seed(0)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_llm_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = [] if args.skip_quality else quality(workdir, args)
        mems = []
        if not args.skip_memory:
            big = args.memory_gb or (0.5 if args.quick else 1.0)
            sizes = (big, big / 2)
            mems = [memory(workdir, s, args.memory_samples) for s in sizes]
        report(rows, mems, args)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
