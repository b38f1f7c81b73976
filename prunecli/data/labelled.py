"""Labelled data for data-driven criteria and training (DESIGN §6).

A :class:`Dataset` and its deterministic batch stream. Every source (data_sources.py) ends in
:func:`from_arrays`, the one place that checks a data set: samples as float32 tensors
``(N, *sample_shape)``, labels as int64 class indices ``(N,)``; :func:`check_fits` checks it
against a model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prunecli.errors import BadInput, PrunecliError, Unsupported

DEFAULT_BATCH_SIZE = 128
DEFAULT_BATCHES = 1

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Dataset:
    """Labelled samples: ``x`` float32 ``(N, *sample_shape)``, ``y`` int64 class indices ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    name: str = "data"  # what the user passed as --data, for messages

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """1 + the largest label in either split."""
        labels = [self.y] if self.y_test is None else [self.y, self.y_test]
        return max(int(t.max()) for t in labels) + 1

    def batches(
        self, batch_size: int, count: int, seed: int = 0, balanced: bool = False, start: int = 0
    ) -> Iterator[Batch]:
        """Batches ``start`` … ``start + count − 1`` of a deterministic stream of training batches.

        The stream depends on ``seed`` only (never on global random state). Plain batches walk
        through seeded permutations of the samples, epoch after epoch, without repeating a sample
        inside a batch. ``balanced`` batches take the same number of samples from every class
        (±1; a small class gives all it has and the others make up the rest), as GraSP's
        reference does. A batch holds ``min(batch_size, N)`` samples.
        """
        size = min(batch_size, len(self))
        if balanced:
            rows = _balanced_rows(self.y, size, seed, start + count)
        else:
            rows = _shuffled_rows(len(self), size, seed, start + count)
        for index, batch_rows in enumerate(rows):
            if index >= start:
                yield self.x[batch_rows], self.y[batch_rows]


def _rng(*key: int) -> np.random.Generator:
    """A generator for one purpose, fixed by ``key`` (negative seeds are folded into 64 bits)."""
    return np.random.default_rng([k % 2**64 for k in key])


def _shuffled_rows(n: int, size: int, seed: int, count: int) -> Iterator[torch.Tensor]:
    per_epoch = n // size
    order = None
    for index in range(count):
        epoch, slot = divmod(index, per_epoch)
        if slot == 0:
            order = torch.from_numpy(_rng(seed, 0, epoch).permutation(n))
        yield order[slot * size : (slot + 1) * size]


def _balanced_rows(y: torch.Tensor, size: int, seed: int, count: int) -> Iterator[torch.Tensor]:
    classes = torch.unique(y).tolist()
    streams = {c: _ClassStream(torch.nonzero(y == c).flatten(), seed, c) for c in classes}
    sizes = {c: len(streams[c].rows) for c in classes}
    for index in range(count):
        quotas = _quotas(sizes, size, _rng(seed, 2, index))
        yield torch.cat([streams[c].take(quotas[c]) for c in classes])


class _ClassStream:
    """One class's samples in seeded permutations; a batch never straddles two of them."""

    def __init__(self, rows: torch.Tensor, seed: int, label: int) -> None:
        self.rows, self.seed, self.label = rows, seed, label
        self.epoch, self.position, self.order = -1, len(rows), rows

    def take(self, n: int) -> torch.Tensor:
        if self.position + n > len(self.rows):
            self.epoch += 1
            permutation = _rng(self.seed, 1, self.label, self.epoch).permutation(len(self.rows))
            self.order, self.position = self.rows[torch.from_numpy(permutation)], 0
        self.position += n
        return self.order[self.position - n : self.position]


def _quotas(sizes: dict[int, int], size: int, rng: np.random.Generator) -> dict[int, int]:
    """Split ``size`` over the classes as evenly as their sizes allow; the remainder goes to
    classes in a seeded random order."""
    quotas = dict.fromkeys(sizes, 0)
    left = size
    while left:
        open_classes = [c for c in sizes if quotas[c] < sizes[c]]
        share, extra = divmod(left, len(open_classes))
        lucky = set(rng.permutation(open_classes)[:extra].tolist())
        for c in open_classes:
            take = min(share + (c in lucky), sizes[c] - quotas[c])
            quotas[c] += take
            left -= take
    return quotas


def batch_options(options: Mapping[str, Any]) -> tuple[int, int]:
    """``(batches, batch_size)`` from a criterion's options (``--batches``, ``--batch-size``)."""
    batches = options.get("batches", DEFAULT_BATCHES)
    batch_size = options.get("batch_size", DEFAULT_BATCH_SIZE)
    for flag, value in (("--batches", batches), ("--batch-size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadInput(f"{flag} must be a positive integer, got {value!r}")
    return batches, batch_size


# --- building and checking a data set -----------------------------------------------------


def from_arrays(
    x: Any, y: Any, x_test: Any = None, y_test: Any = None, name: str = "data"
) -> Dataset:
    """A checked :class:`Dataset` from arrays (numpy, torch or nested lists); BadInput if bad."""
    train_x, train_y = _samples(x, "x", name), _labels(y, "y", name)
    _check_pair(train_x, train_y, "x", "y", name)
    if (x_test is None) != (y_test is None):
        given, missing = ("x_test", "y_test") if y_test is None else ("y_test", "x_test")
        raise BadInput(f"--data {name} has {given} but no {missing}", "give both or neither")
    test_x = test_y = None
    if x_test is not None:
        test_x, test_y = _samples(x_test, "x_test", name), _labels(y_test, "y_test", name)
        _check_pair(test_x, test_y, "x_test", "y_test", name)
        if test_x.shape[1:] != train_x.shape[1:]:
            raise BadInput(
                f"--data {name}: x_test samples have shape {list(test_x.shape[1:])}, "
                f"x samples {list(train_x.shape[1:])}"
            )
    return Dataset(train_x, train_y, test_x, test_y, name)


def _as_tensor(value: Any, key: str, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"--data {name}: {key} is not an array ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise BadInput(f"--data {name}: {key} must be numeric, got {array.dtype} values")
    return torch.from_numpy(np.ascontiguousarray(array))


def _samples(value: Any, key: str, name: str) -> torch.Tensor:
    x = _as_tensor(value, key, name)
    if x.is_complex() or x.dtype == torch.bool:
        raise BadInput(f"--data {name}: {key} must hold real numbers, got {x.dtype}")
    if x.dim() < 2:
        raise BadInput(
            f"--data {name}: {key} has shape {list(x.shape)}; it needs a batch dimension "
            "and a sample shape, e.g. [N, 40]"
        )
    x = x.to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise BadInput(f"--data {name}: {key} contains NaN or infinite values")
    return x


def _labels(value: Any, key: str, name: str) -> torch.Tensor:
    y = _as_tensor(value, key, name)
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise BadInput(
            f"--data {name}: {key} has shape {list(y.shape)}; labels are one class index "
            "per sample, shape [N]",
            "for one-hot labels pass y.argmax(1)",
        )
    if y.is_floating_point():
        bad = ~torch.isfinite(y) | (y != torch.round(y))
        if bool(bad.any()):
            raise BadInput(
                f"--data {name}: {key} must hold integer class indices; found {y[bad][0].item()}"
            )
    y = y.to(torch.int64)
    if y.numel() and int(y.min()) < 0:
        raise BadInput(
            f"--data {name}: {key} must hold class indices 0, 1, …; found {int(y.min())}"
        )
    return y


def _check_pair(x: torch.Tensor, y: torch.Tensor, x_key: str, y_key: str, name: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise BadInput(
            f"--data {name}: {x_key} has {x.shape[0]} samples but {y_key} has {y.shape[0]} labels"
        )
    if x.shape[0] == 0:
        raise BadInput(f"--data {name}: {x_key} is empty (no samples)")


# --- sources ------------------------------------------------------------------------------


# --- data against a model -----------------------------------------------------------------


def check_fits(
    data: Dataset,
    module: torch.nn.Module,
    input_shape: tuple[int, ...] | None = None,
    batch_size: int | None = None,
    check_labels: bool = True,
) -> int:
    """Run one batch of ``data`` through ``module`` (eval mode, no gradients, state restored)
    and return the number of outputs; BadInput when the samples do not fit the model or the
    labels exceed its outputs."""
    rows = min(batch_size or DEFAULT_BATCH_SIZE, len(data))
    parameter = next(iter(module.parameters()), None)
    x = data.x[:rows]
    if parameter is not None:
        x = x.to(parameter.device, parameter.dtype if parameter.is_floating_point() else x.dtype)
    was_training = module.training
    set_mode(module, training=False)
    try:
        with torch.no_grad(), explain_forward_errors(data, input_shape, rows):
            output = module(x)
    finally:
        set_mode(module, was_training)
    outputs = logits_width(output)
    if check_labels:
        check_label_range(data, outputs)
    return outputs


def set_mode(module: torch.nn.Module, training: bool) -> None:
    """Train or eval mode where the module allows it: the graph of a loaded ``.pt2`` program
    has its mode baked in, and refuses to switch."""
    try:
        module.train(training)
    except NotImplementedError:
        pass


@contextlib.contextmanager
def explain_forward_errors(
    data: Dataset, input_shape: tuple[int, ...] | None, batch: int | None = None
) -> Iterator[None]:
    """Turn a forward pass that fails on ``data`` into one line naming both shapes."""
    try:
        yield
    except PrunecliError:
        raise
    except Exception as exc:  # noqa: BLE001 - shape errors come as many types
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        shape = list(data.sample_shape)
        if input_shape is not None and tuple(input_shape) == data.sample_shape and batch:
            raise BadInput(
                f"--data {data.name}: the model refused a batch of {batch} samples of shape "
                f"{shape} ({detail})",
                "a .pt2 program exported with a fixed batch size takes only that: "
                "pass --batch-size",
            ) from None
        expects = f", which expects {list(input_shape)}" if input_shape else ""
        raise BadInput(
            f"--data {data.name}: samples of shape {shape} do not fit the model{expects} "
            f"({detail})",
            "give data whose samples have the model's input shape",
        ) from None


def logits_width(output: Any) -> int:
    """The number of classes of a classifier's output ``(batch, classes)``."""
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        got = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise Unsupported(
            f"labelled data needs a model that outputs class scores [batch, classes]; it gave {got}"
        )
    return int(output.shape[1])


def check_label_range(data: Dataset, outputs: int) -> None:
    if data.num_classes > outputs:
        raise BadInput(
            f"--data {data.name} has labels up to {data.num_classes - 1} ({data.num_classes} "
            f"classes), but the model has {outputs} outputs",
            "give data with fewer classes, or a model with an output per class",
        )
