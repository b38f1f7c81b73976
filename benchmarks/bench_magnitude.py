"""Global magnitude pruning of a >=100M-parameter fp32 checkpoint: prunecli vs torch.nn.utils.prune.

The target (project issue): pruning to sparsity 0.9 with ``prunecli prune --method magnitude``
takes at most half the wall time and at most half the peak memory of the
``torch.nn.utils.prune.global_unstructured`` route on the same tensors.

Both routes run the complete user job (load the file, prune, save the result), each in a fresh
child process (``sys.executable``), so every child's ``ru_maxrss`` is that route's own peak.
The wall time is measured around the whole child, interpreter start included; a child that only
imports torch gives the fixed overhead both routes share.

  prunecli   ``python -m prunecli prune IN --method magnitude --sparsity S -o OUT -q --force``,
             run in-process by ``runpy`` so the child can report its own peak RSS.
  baseline   ``safetensors.torch.load_file`` → one ``nn.Module`` per weight (an ``nn.Parameter``
             named ``weight``) → ``prune.global_unstructured(..., prune.L1Unstructured, amount=S)``
             → ``prune.remove`` each → ``safetensors.torch.save_file`` of the full state dict.

Afterwards both outputs are read back tensor by tensor and checked: exactly ``round(S·N)`` zeros
among the N prunable weights, kept weights and biases unchanged, every pruned magnitude <= every kept
one, and the two masks identical except for weights whose magnitude equals the threshold (ties:
with ~1e8 normal fp32 values a few share the threshold's value, and the two routes break ties
differently: prunecli by position, topk unspecified).

Usage (from the repository root):

  python benchmarks/bench_magnitude.py                  # ~104M parameters, one run per route
  python benchmarks/bench_magnitude.py --params 20e6    # quick run
  python benchmarks/bench_magnitude.py --repeat 3 --profile --workdir /tmp/pb --keep

The script is self-contained: it imports only the standard library at top level, and re-runs
itself with a private ``_child`` first argument for each measured process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()
RESULT_ENV = "PRUNECLI_BENCH_RESULT"
INPUT_NAME = "model.safetensors"
OUTPUTS = {"prunecli": "out_prunecli.safetensors", "baseline": "out_baseline.safetensors"}
TARGET_RATIO = 0.5
N_BLOCKS = 6


# --------------------------------------------------------------------------- the synthetic model


def model_shapes(params: float) -> dict[str, tuple[int, ...]]:
    """A transformer-MLP-like stack of Linear weights and biases of about ``params`` parameters.

    ``N_BLOCKS`` blocks of (qkv d→3d, proj d→d, fc1 d→4d, fc2 4d→d), about 70% of the total,
    then one large ``head`` (rows×d) with the rest: varied shapes, one tensor of ~30%.
    """
    d = max(64, round(math.sqrt(0.7 * params / (12 * N_BLOCKS)) / 64) * 64)
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(N_BLOCKS):
        for name, out_f, in_f in (
            ("attn.qkv", 3 * d, d),
            ("attn.proj", d, d),
            ("mlp.fc1", 4 * d, d),
            ("mlp.fc2", d, 4 * d),
        ):
            shapes[f"layers.{i}.{name}.weight"] = (out_f, in_f)
            shapes[f"layers.{i}.{name}.bias"] = (out_f,)
    rest = int(params) - sum(math.prod(s) for s in shapes.values())
    rows = max(1, rest // (d + 1))
    shapes["head.weight"] = (rows, d)
    shapes["head.bias"] = (rows,)
    return shapes


def prunable_names(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    return [name for name, shape in shapes.items() if name.endswith(".weight") and len(shape) >= 2]


def read_header(path: Path) -> dict:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


# --------------------------------------------------------------------------- child processes


def _report(result: dict) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["maxrss_kb"] = usage.ru_maxrss
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    result["sys_s"] = usage.ru_stime
    Path(os.environ[RESULT_ENV]).write_text(json.dumps(result))


class _PeakSampler:
    """Profile mode: sample RSS every few ms; keep the main thread's stack at the highest sample."""

    def __init__(self, interval: float = 0.002) -> None:
        import threading

        self.interval = interval
        self.peak_kb = 0
        self.peak_at = 0.0
        self.peak_stack: list[str] = []
        self.timeline: list[tuple[float, int]] = []
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
        self._t0 = time.perf_counter()

    def _rss_kb(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page_kb

    def _run(self) -> None:
        import traceback

        last_mark = -1.0
        while not self._stop.wait(self.interval):
            rss = self._rss_kb()
            now = time.perf_counter() - self._t0
            if now - last_mark >= 0.25:
                self.timeline.append((round(now, 2), rss // 1024))
                last_mark = now
            if rss > self.peak_kb + 1024:
                frame = sys._current_frames().get(self._main)
                if frame is not None:
                    self.peak_kb, self.peak_at = rss, now
                    self.peak_stack = [
                        f"{Path(fs.filename).name}:{fs.lineno} {fs.name}  | {fs.line or ''}"
                        for fs in traceback.extract_stack(frame)
                        if "bench_magnitude" not in fs.filename
                        and "runpy" not in fs.filename
                        and "click" not in fs.filename
                        and "typer" not in fs.filename
                    ]

    def __enter__(self) -> _PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        return {
            "peak_mb": self.peak_kb // 1024,
            "peak_at_s": round(self.peak_at, 2),
            "peak_stack": self.peak_stack,
            "timeline": self.timeline,
        }


def _profiled(run, profile_path: str | None) -> tuple[object, dict | None]:
    """Run ``run()``, under cProfile and the RSS sampler when ``profile_path`` is set."""
    if not profile_path:
        return run(), None
    import cProfile

    profiler = cProfile.Profile()
    with _PeakSampler() as sampler:
        profiler.enable()
        try:
            value = run()
        finally:
            profiler.disable()
    profiler.dump_stats(profile_path)
    return value, sampler.summary()


def child_generate(path: str, params: float, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    shapes = model_shapes(params)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in shapes.items():
        if len(shape) >= 2:
            tensors[name] = torch.randn(shape, generator=generator) * shape[1] ** -0.5
        else:
            tensors[name] = torch.randn(shape, generator=generator) * 0.01
    meta = {"bench.params": repr(float(params)), "bench.seed": str(seed)}
    save_file(tensors, path, metadata=meta)
    _report({"tensors": len(tensors), "params": sum(t.numel() for t in tensors.values())})


def child_import() -> None:
    started = time.perf_counter()
    import torch  # noqa: F401

    _report({"inner_s": time.perf_counter() - started})


def child_prunecli(inp: str, out: str, sparsity: str, profile_path: str | None) -> None:
    import runpy

    argv = ["prunecli", "prune", inp, "--method", "magnitude", "--sparsity", sparsity]
    argv += ["-o", out, "-q", "--force"]
    started = time.perf_counter()

    def run() -> int:
        sys.argv = argv
        try:
            runpy.run_module("prunecli", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
            return code if isinstance(code, int) else (0 if code is None else 1)
        return 0

    code, peak = _profiled(run, profile_path)
    _report({"exit": code, "inner_s": time.perf_counter() - started, "sampler": peak})


def child_baseline(inp: str, out: str, sparsity: str, profile_path: str | None) -> None:
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def run() -> int:
        import torch
        from safetensors.torch import load_file, save_file
        from torch import nn
        from torch.nn.utils import prune

        t = time.perf_counter()
        phases["import"] = t - started
        tensors = load_file(inp)
        names = [n for n, v in tensors.items() if n.endswith(".weight") and v.dim() >= 2]
        modules: dict[str, nn.Module] = {}
        for name in names:
            module = nn.Module()
            module.weight = nn.Parameter(tensors.pop(name))
            modules[name] = module
        phases["load"] = -t + (t := time.perf_counter())
        prune.global_unstructured(
            [(m, "weight") for m in modules.values()],
            pruning_method=prune.L1Unstructured,
            amount=float(sparsity),
        )
        for module in modules.values():
            prune.remove(module, "weight")
        phases["prune"] = -t + (t := time.perf_counter())
        header = read_header(Path(inp))
        state = {}
        for name in header:  # file order
            if name == "__metadata__":
                continue
            state[name] = modules[name].weight.detach() if name in modules else tensors[name]
        save_file(state, out)
        phases["save"] = time.perf_counter() - t
        assert torch.is_tensor(state[names[0]])
        return 0

    code, peak = _profiled(run, profile_path)
    _report(
        {"exit": code, "inner_s": time.perf_counter() - started, "phases": phases, "sampler": peak}
    )


def child_verify(workdir: str, sparsity: str) -> None:
    """Compare both outputs with the input, one tensor at a time."""
    import torch
    from safetensors import safe_open

    folder = Path(workdir)
    inp = folder / INPUT_NAME
    header = read_header(inp)
    names = [n for n in header if n != "__metadata__"]
    shapes = {n: tuple(header[n]["shape"]) for n in names}
    prunable = prunable_names(shapes)
    problems: list[str] = []
    meta_p = read_header(folder / OUTPUTS["prunecli"]).get("__metadata__", {})
    listed = json.loads(meta_p.get("prunecli.prunable", "[]"))
    if listed != prunable:
        problems.append(
            f"prunecli pruned {len(listed)} tensors, expected the {len(prunable)} weights"
        )

    total = sum(math.prod(shapes[n]) for n in prunable)
    expected = round(float(sparsity) * total)
    stats = {r: {"zeros": 0, "max_pruned": -1.0, "min_kept": math.inf} for r in OUTPUTS}
    mismatch = 0
    mismatch_values: set[float] = set()
    with (
        safe_open(str(inp), "pt") as f_in,
        safe_open(str(folder / OUTPUTS["prunecli"]), "pt") as f_p,
        safe_open(str(folder / OUTPUTS["baseline"]), "pt") as f_b,
    ):
        for name in names:
            original = f_in.get_tensor(name)
            outs = {"prunecli": f_p.get_tensor(name), "baseline": f_b.get_tensor(name)}
            bad = [
                r for r, t in outs.items() if (t.dtype, t.shape) != (original.dtype, original.shape)
            ]
            if bad:
                problems += [f"{r}: {name} is {outs[r].dtype} {list(outs[r].shape)}" for r in bad]
                continue
            if name not in prunable:
                for route, tensor in outs.items():
                    if not torch.equal(tensor, original):
                        problems.append(f"{route}: non-prunable {name} changed")
                continue
            magnitude = original.abs()
            zero = {}
            for route, tensor in outs.items():
                z = tensor == 0
                zero[route] = z
                s = stats[route]
                s["zeros"] += int(z.sum())
                if not torch.equal(tensor, original.masked_fill(z, 0)):
                    problems.append(f"{route}: kept weights of {name} changed")
                if bool(z.any()):
                    s["max_pruned"] = max(s["max_pruned"], float(magnitude[z].max()))
                if not bool(z.all()):
                    s["min_kept"] = min(s["min_kept"], float(magnitude[~z].min()))
            differ = zero["prunecli"] ^ zero["baseline"]
            count = int(differ.sum())
            if count:
                mismatch += count
                mismatch_values.update(magnitude[differ].unique().tolist()[:10])
    for route, s in stats.items():
        if s["zeros"] != expected:
            problems.append(
                f"{route}: {s['zeros']} zeros, expected round({sparsity}·{total}) = {expected}"
            )
        if s["max_pruned"] > s["min_kept"]:
            problems.append(
                f"{route}: pruned |w| up to {s['max_pruned']} but kept |w| down to {s['min_kept']}"
            )
    threshold = stats["prunecli"]["max_pruned"]
    if stats["baseline"]["max_pruned"] != threshold:
        problems.append("the two routes have different thresholds")
    if mismatch and mismatch_values != {threshold}:
        problems.append(
            f"masks differ at {mismatch} weights whose magnitudes {sorted(mismatch_values)[:5]} "
            f"are not the threshold {threshold}"
        )
    _report(
        {
            "prunable": total,
            "expected_zeros": expected,
            "zeros": {r: s["zeros"] for r, s in stats.items()},
            "threshold": threshold,
            "mask_mismatch": mismatch,
            "problems": problems,
        }
    )


def child_main(argv: list[str]) -> None:
    route, *rest = argv
    if route == "generate":
        child_generate(rest[0], float(rest[1]), int(rest[2]))
    elif route == "import":
        child_import()
    elif route == "prunecli":
        child_prunecli(rest[0], rest[1], rest[2], rest[3] or None)
    elif route == "baseline":
        child_baseline(rest[0], rest[1], rest[2], rest[3] or None)
    elif route == "verify":
        child_verify(rest[0], rest[1])
    else:
        raise SystemExit(f"unknown child {route!r}")


# --------------------------------------------------------------------------- the parent


def run_child(*args: str) -> tuple[float, dict]:
    """Run one child; return (wall seconds around the whole process, its result)."""
    with tempfile.NamedTemporaryFile(prefix="bench-result-", suffix=".json", delete=False) as f:
        result_path = Path(f.name)
    env = dict(os.environ, **{RESULT_ENV: str(result_path)})
    try:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "_child", *args],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        text = result_path.read_text() if result_path.exists() else ""
    finally:
        result_path.unlink(missing_ok=True)
    if proc.returncode != 0 or not text:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"child {args[0]} failed with exit status {proc.returncode}")
    result = json.loads(text)
    if result.get("exit", 0) != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"child {args[0]} exited with {result['exit']}")
    return wall, result


def prepare_input(folder: Path, params: float, seed: int) -> int:
    path = folder / INPUT_NAME
    if path.exists():
        meta = read_header(path).get("__metadata__", {})
        if meta.get("bench.params") == repr(float(params)) and meta.get("bench.seed") == str(seed):
            print(f"reusing {path}")
            return sum(
                math.prod(v["shape"]) for k, v in read_header(path).items() if k != "__metadata__"
            )
    print(f"generating {path} (~{params / 1e6:.0f}M fp32 parameters, seed {seed}) ...", flush=True)
    wall, result = run_child("generate", str(path), repr(float(params)), str(seed))
    print(
        f"  {result['tensors']} tensors, {result['params']:,} parameters, "
        f"{path.stat().st_size / 2**20:.0f} MiB, {wall:.1f} s"
    )
    return result["params"]


def print_profile(route: str, profile_path: Path, sampler: dict | None, top: int) -> None:
    import io
    import pstats

    print(f"\n===== profile: {route} =====")
    stream = io.StringIO()
    stats = pstats.Stats(str(profile_path), stream=stream)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    text = stream.getvalue()
    print(text[text.find("   ncalls") - 200 if "   ncalls" in text else 0 :])
    if sampler:
        print(f"RSS peak {sampler['peak_mb']} MB at {sampler['peak_at_s']} s, main thread at:")
        for line in sampler["peak_stack"]:
            print(f"    {line}")
        timeline = " ".join(f"{t}s:{mb}" for t, mb in sampler["timeline"])
        print(f"RSS timeline (s:MB, every 0.25 s): {timeline}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--params",
        type=float,
        default=104e6,
        help="approximate parameter count of the synthetic model (default 104e6)",
    )
    parser.add_argument("--sparsity", default="0.9", help="target sparsity (default 0.9)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per route; the table shows the fastest time and highest peak",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="where files go (default: a temporary folder)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the generated files (a kept input is reused by the next run)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the measured runs, one extra cProfile + RSS-sampled run per route",
    )
    parser.add_argument("--profile-top", type=int, default=25, help="rows per profile listing")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    created = args.workdir is None
    folder = Path(tempfile.mkdtemp(prefix="prunecli-bench-")) if created else args.workdir
    folder.mkdir(parents=True, exist_ok=True)
    inp = folder / INPUT_NAME
    made = [folder / name for name in OUTPUTS.values()]
    try:
        params = prepare_input(folder, args.params, args.seed)
        load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
        import_walls, import_rss, import_cpu = [], [], []
        walls: dict[str, list[float]] = {r: [] for r in OUTPUTS}
        cpus: dict[str, list[float]] = {r: [] for r in OUTPUTS}
        rss: dict[str, list[int]] = {r: [] for r in OUTPUTS}
        extra: dict[str, dict] = {}
        for i in range(args.repeat):
            wall, result = run_child("import")
            import_walls.append(wall)
            import_rss.append(result["maxrss_kb"])
            import_cpu.append(result["cpu_s"])
            for route, out_name in OUTPUTS.items():
                out = folder / out_name
                out.unlink(missing_ok=True)
                wall, result = run_child(route, str(inp), str(out), args.sparsity, "")
                walls[route].append(wall)
                rss[route].append(result["maxrss_kb"])
                cpus[route].append(result["cpu_s"])
                extra[route] = result
                print(
                    f"run {i + 1}/{args.repeat} {route:9s} {wall:7.2f} s wall "
                    f"{result['cpu_s']:7.2f} s cpu (sys {result['sys_s']:5.2f}) "
                    f"{result['maxrss_kb'] / 1024:8.0f} MB",
                    flush=True,
                )

        _, check = run_child("verify", str(folder), args.sparsity)

        mb = {r: max(v) / 1024 for r, v in rss.items()}
        best = {r: min(v) for r, v in walls.items()}
        base_mb, base_s = max(import_rss) / 1024, min(import_walls)
        time_ratio = best["prunecli"] / best["baseline"]
        mem_ratio = mb["prunecli"] / mb["baseline"]
        print()
        print(
            f"global magnitude pruning to sparsity {args.sparsity}: {params:,} fp32 parameters "
            f"({check['prunable']:,} prunable), {inp.stat().st_size / 2**20:.0f} MiB file; "
            f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, repeat {args.repeat} "
            f"(min wall/cpu, max peak); load average {load_before} before, "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after"
        )
        rows = [("route", "wall s", "cpu s", "peak RSS MB", "zeros")]
        rows.append(
            ("import torch only", f"{base_s:.2f}", f"{min(import_cpu):.2f}", f"{base_mb:.0f}", "-")
        )
        for route in OUTPUTS:
            rows.append(
                (
                    route,
                    f"{best[route]:.2f}",
                    f"{min(cpus[route]):.2f}",
                    f"{mb[route]:.0f}",
                    f"{check['zeros'][route]:,}",
                )
            )
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        line = "-+-".join("-" * w for w in widths)
        for j, row in enumerate(rows):
            print(
                " | ".join(
                    cell.ljust(w) if c == 0 else cell.rjust(w)
                    for c, (cell, w) in enumerate(zip(row, widths, strict=True))
                )
            )
            if j == 0:
                print(line)
        net_t = (best["prunecli"] - base_s) / max(best["baseline"] - base_s, 1e-9)
        net_m = (mb["prunecli"] - base_mb) / max(mb["baseline"] - base_mb, 1e-9)
        verdict = {True: "PASS", False: "FAIL"}
        cpu_ratio = min(cpus["prunecli"]) / min(cpus["baseline"])
        print(
            f"\nprunecli/baseline time   {time_ratio:.3f}  (target <= {TARGET_RATIO})  "
            f"{verdict[time_ratio <= TARGET_RATIO]}   [net of import torch: {net_t:.3f}]"
        )
        print(
            f"prunecli/baseline memory {mem_ratio:.3f}  (target <= {TARGET_RATIO})  "
            f"{verdict[mem_ratio <= TARGET_RATIO]}   [net of import torch: {net_m:.3f}]"
        )
        print(
            f"prunecli/baseline cpu    {cpu_ratio:.3f}  (for information: less sensitive to "
            f"other load on the machine than wall time)"
        )
        if "phases" in extra.get("baseline", {}):
            phases = ", ".join(f"{k} {v:.2f}s" for k, v in extra["baseline"]["phases"].items())
            print(f"baseline phases (last run): {phases}")
        print(
            f"expected zeros round({args.sparsity}·{check['prunable']:,}) = "
            f"{check['expected_zeros']:,}; masks differ at {check['mask_mismatch']} weights "
            f"(all ties at |w| = {check['threshold']!r})"
            if check["mask_mismatch"]
            else f"expected zeros {check['expected_zeros']:,}; masks identical"
        )
        if check["problems"]:
            print("VERIFY FAIL:")
            for problem in check["problems"]:
                print(f"  - {problem}")
        else:
            print("verify: OK (both outputs exact, kept weights and biases unchanged)")

        if args.profile:
            for route, out_name in OUTPUTS.items():
                profile_path = folder / f"profile_{route}.pstats"
                made.append(profile_path)
                out = folder / out_name
                out.unlink(missing_ok=True)
                wall, result = run_child(
                    route, str(inp), str(out), args.sparsity, str(profile_path)
                )
                print(
                    f"\n(profiled run {route}: {wall:.2f} s, {result['maxrss_kb'] / 1024:.0f} MB)"
                )
                print_profile(route, profile_path, result.get("sampler"), args.profile_top)

        ok = not check["problems"] and time_ratio <= TARGET_RATIO and mem_ratio <= TARGET_RATIO
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "params": params,
                        "prunable": check["prunable"],
                        "sparsity": args.sparsity,
                        "repeat": args.repeat,
                        "import_torch": {"wall_s": base_s, "peak_rss_mb": base_mb},
                        "wall_s": walls,
                        "cpu_s": cpus,
                        "peak_rss_kb": rss,
                        "time_ratio": time_ratio,
                        "memory_ratio": mem_ratio,
                        "verify": check,
                        "pass": ok,
                    },
                    indent=2,
                )
            )
        return 0 if ok else 1
    finally:
        if not args.keep:
            for path in [inp, *made]:
                path.unlink(missing_ok=True)
            if created:
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child_main(sys.argv[2:])
    else:
        sys.exit(main())
