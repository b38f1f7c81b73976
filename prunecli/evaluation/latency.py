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


def time_pair(
    module: nn.Module,
    reference: nn.Module,
    example: torch.Tensor,
    repeats: int,
    device: str = "cpu",
    call: Any = None,
) -> tuple[list[float], list[float]]:
    """:func:`time_forward` of two modules side by side: after ``WARMUP`` untimed passes of
    each, ``repeats`` rounds of one timed pass of each, alternating which goes first, so drift
    of the machine's load reaches both alike. (seconds of ``module``, seconds of ``reference``)."""
    run = call or (lambda m, x: m(x))
    for each in (module, reference):
        each.to(device)
        set_mode(each, False)
    example = example.to(device)
    times: tuple[list[float], list[float]] = ([], [])
    with torch.no_grad():
        for _ in range(WARMUP):
            run(module, example)
            run(reference, example)
        _synchronize(device)
        for round_ in range(repeats):
            order = (0, 1) if round_ % 2 == 0 else (1, 0)
            for which in order:
                started = time.perf_counter()
                run((module, reference)[which], example)
                _synchronize(device)
                times[which].append(time.perf_counter() - started)
    return times


def with_reference(entry: dict, times: list[float], source: str) -> dict:
    """``entry`` (:func:`latency_entry`) with the reference's timings, timed interleaved with
    it, and the speed-up: the reference's median over this model's."""
    ms = sorted(t * 1000 for t in times)
    median = statistics.median(ms)
    entry["reference"] = {"source": source, "value": median, "min": ms[0], "max": ms[-1]}
    entry["speedup"] = median / entry["value"] if entry["value"] > 0 else None
    entry["protocol"] += (
        f"; interleaved with as many passes of the reference {source}, alternating which runs "
        "first; speed-up = the reference's median / this model's"
    )
    return entry


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
