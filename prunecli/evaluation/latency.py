"""Measured latency of a forward pass: median and spread of repeated timed passes after
warm-up."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from prunecli.data.labelled import set_mode

DEFAULT_REPEATS = 20
WARMUP = 3


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def time_forward(
    module: nn.Module, example: torch.Tensor, repeats: int, device: str = "cpu", call: Any = None
) -> list[float]:
    """Seconds of each of ``repeats`` forward passes on ``example`` after ``WARMUP`` untimed
    ones; eval mode, no gradients. ``call``: how to run the module (default ``module(x)``)."""
    run = call or (lambda m, x: m(x))
    module.to(device)
    example = example.to(device)
    set_mode(module, False)
    times = []
    with torch.no_grad():
        for _ in range(WARMUP):
            run(module, example)
        _synchronize(device)
        for _ in range(repeats):
            started = time.perf_counter()
            run(module, example)
            _synchronize(device)
            times.append(time.perf_counter() - started)
    return times


def latency_entry(
    times: list[float], batch_size: int, device: str, shape: list[int], runtime: str = "torch"
) -> dict:
    """The quality entry of a latency measurement, in milliseconds per forward pass;
    ``runtime``: what ran it (``torch``, or ``onnxruntime`` for an ONNX model)."""
    ms = sorted(t * 1000 for t in times)
    quartiles = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else [ms[0]] * 3
    return {
        "metric": "latency_ms",
        "value": statistics.median(ms),
        "min": ms[0],
        "q1": quartiles[0],
        "q3": quartiles[2],
        "max": ms[-1],
        "repeats": len(ms),
        "batch_size": batch_size,
        "input": shape,
        "device": device,
        "runtime": runtime,
        "protocol": (
            f"median of {len(ms)} timed forward passes of a batch {shape} on {device}"
            + (" by onnxruntime (CPUExecutionProvider)" if runtime == "onnxruntime" else "")
            + f" after {WARMUP} untimed ones; eval mode, no gradients, "
            f"{torch.get_num_threads()} CPU threads"
        ),
    }
