"""Export sizes and parity at 90% sparsity on the zoo's vgg16 (CIFAR, 14.7M parameters).

The targets (project issue 5), checked on the artifacts of ``prunecli export``:

  ONNX with --sparse-initializers   <= 0.35x the dense ONNX file
  parity (both ONNX files)          <= 1e-4   (max |onnxruntime - torch| / max(1, max |torch|))
  bitmask safetensors               <= 0.25x the dense fp32 safetensors file (for information
                                               here; test_bitmask.py owns that target)

and the pipe ``prunecli prune ... --format bitmask -o - | prunecli export - --to onnx`` end to end.

Every step is the real command line (``python -m prunecli ... --json``) in a child process; the
table shows what the reports say, and the ONNX files are also read back here with ``onnx`` to
count their zeros independently.

Usage (from the repository root):

  python benchmarks/bench_export.py
  python benchmarks/bench_export.py --arch resnet20 --sparsity 0.8 --keep --workdir /tmp/be
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SPARSE_ONNX = 0.35
TARGET_BITMASK = 0.25
TARGET_PARITY = 1e-4


def prunecli(*args: str, cwd: Path) -> tuple[dict, float]:
    """Run ``prunecli ARGS --json`` in a child; its report and the wall time."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "prunecli", *args, "--json"],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"prunecli {' '.join(args)} exited with {done.returncode}")
    return json.loads(done.stdout), wall


def onnx_zeros(path: Path, names: list[str]) -> int:
    """Zeros among the named initializers, sparse ones counted from their stored values."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    zeros = 0
    for init in model.graph.initializer:
        if init.name in names:
            zeros += int(np.size(numpy_helper.to_array(init))) - int(
                np.count_nonzero(numpy_helper.to_array(init))
            )
    for sparse in model.graph.sparse_initializer:
        if sparse.values.name in names:
            size = int(np.prod(sparse.dims))
            zeros += size - int(np.count_nonzero(numpy_helper.to_array(sparse.values)))
    return zeros


def pipe(folder: Path, source: str, sparsity: str) -> tuple[int, float]:
    """prune --format bitmask -o - | export - --to onnx; the exit status and wall time."""
    started = time.perf_counter()
    prune = subprocess.Popen(
        [sys.executable, "-m", "prunecli", "prune", source, "--method", "magnitude"]
        + ["--sparsity", sparsity, "--format", "bitmask", "-o", "-", "-q"],
        stdout=subprocess.PIPE,
        cwd=folder,
    )
    export = subprocess.run(
        [sys.executable, "-m", "prunecli", "export", "-", "--to", "onnx", "-o", "pipe.onnx"]
        + ["-q", "--force"],
        stdin=prune.stdout,
        cwd=folder,
    )
    assert prune.stdout is not None
    prune.stdout.close()
    status = prune.wait() or export.returncode
    return status, time.perf_counter() - started


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print(
            " | ".join(
                cell.ljust(w) if c == 0 else cell.rjust(w)
                for c, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if j == 0:
            print("-+-".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="vgg16", help="zoo architecture (default vgg16)")
    parser.add_argument("--sparsity", default="0.9", help="magnitude sparsity (default 0.9)")
    parser.add_argument("--workdir", type=Path, help="where files go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    created = args.workdir is None
    folder = Path(tempfile.mkdtemp(prefix="prunecli-bench-export-")) if created else args.workdir
    folder.mkdir(parents=True, exist_ok=True)
    try:
        prunecli("init", args.arch, "-o", "init.safetensors", "--force", cwd=folder)
        pruned, _ = prunecli(
            "prune", "init.safetensors", "--method", "magnitude", "--sparsity", args.sparsity,
            "-o", "pruned.safetensors", "--force", cwd=folder,
        )  # fmt: skip
        names = [layer["name"] for layer in pruned["layers"]]
        runs = {
            "safetensors dense": ("--to", "safetensors", "-o", "dense.safetensors"),
            "safetensors bitmask": ("--to", "safetensors", "--format", "bitmask")
            + ("-o", "bitmask.safetensors"),
            "onnx dense": ("--to", "onnx", "-o", "dense.onnx"),
            "onnx sparse initializers": ("--to", "onnx", "--sparse-initializers")
            + ("-o", "sparse.onnx"),
            "pt2": ("--to", "pt2", "-o", "model.pt2"),
        }
        results = {}
        for label, options in runs.items():
            report, wall = prunecli("export", "pruned.safetensors", *options, "--force", cwd=folder)
            results[label] = {"export": report["export"], "wall_s": wall}
            print(f"{label}: {wall:.1f} s", flush=True)
        status, pipe_wall = pipe(folder, "init.safetensors", args.sparsity)

        dense_onnx = results["onnx dense"]["export"]["file_bytes"]
        dense_st = results["safetensors dense"]["export"]["file_bytes"]
        expected_zeros = pruned["totals"]["prunable_params"] - pruned["totals"]["prunable_nonzero"]
        print(
            f"\n{args.arch} pruned by global magnitude to {args.sparsity}: "
            f"{pruned['totals']['prunable_params']:,} prunable weights, "
            f"{expected_zeros:,} zeros; python {sys.version.split()[0]}"
        )
        rows = [("artifact", "bytes", "x dense", "parity", "zeros kept", "wall s", "target")]
        checks: list[tuple[str, bool]] = []
        for label, result in results.items():
            export = result["export"]
            base = dense_onnx if export["format"] == "onnx" else dense_st
            ratio = export["file_bytes"] / base
            parity = export["parity"]["relative"] if export["parity"] else None
            target = ""
            if label == "onnx sparse initializers":
                target = f"<= {TARGET_SPARSE_ONNX}x"
                checks.append((f"{label} size", ratio <= TARGET_SPARSE_ONNX))
            if label == "safetensors bitmask":
                target = f"<= {TARGET_BITMASK}x"
                checks.append((f"{label} size", ratio <= TARGET_BITMASK))
            if export["format"] == "onnx":
                target += f"{', ' if target else ''}parity <= {TARGET_PARITY:g}"
                checks.append((f"{label} parity", parity is not None and parity <= TARGET_PARITY))
                zeros = onnx_zeros(folder / export["path"], names)
                checks.append((f"{label} zeros (read back)", zeros >= expected_zeros))
            rows.append(
                (
                    label,
                    f"{export['file_bytes']:,}",
                    f"{ratio:.3f}",
                    "-" if parity is None else f"{parity:.2e}",
                    "yes" if export["sparsity"]["zeros_preserved"] else "NO",
                    f"{result['wall_s']:.1f}",
                    target,
                )
            )
            checks.append((f"{label} zeros", export["sparsity"]["zeros_preserved"]))
        print_table(rows)
        checks.append(("pipe prune --format bitmask -o - | export - --to onnx", status == 0))
        print(f"\npipe prune | export: exit {status}, {pipe_wall:.1f} s")
        failed = [name for name, ok in checks if not ok]
        print("all targets met" if not failed else f"FAILED: {', '.join(failed)}")
        if args.json:
            args.json.write_text(json.dumps({"results": results, "checks": checks}, indent=2))
        return 0 if not failed else 1
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
