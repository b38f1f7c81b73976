"""Masked training: the loop behind `retrain` and the training methods of `prune`.

Every pruned weight (mask False) is exactly zero after every optimizer step: its gradient is
zeroed before the step, the weight is multiplied by its mask after it, and so are the
optimizer's per-entry buffers (momentum, Adam's moments), so no state left over from before a
mask shrank can move a pruned weight again. Parameters without a mask train freely.

Methods that act during training plug in through :class:`TrainHook` (training/hooks.py); the loop
calls their methods in a fixed order each step (backward → ``after_backward`` → optimizer step →
masking → ``on_step_end``) and ``on_epoch_end`` after each epoch's evaluation. What it takes and
returns is training/settings.py, the test split and evaluation training/evaluation.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunecli.data.labelled import (
    Dataset,
    check_label_range,
    explain_forward_errors,
    logits_width,
    set_mode,
)
from prunecli.errors import BadInput
from prunecli.training import distributed
from prunecli.training.evaluation import evaluate, split_data
from prunecli.training.hooks import TrainHook, TrainState
from prunecli.training.settings import (
    EpochRecord,
    TrainingDiverged,
    TrainProgress,
    TrainResult,
    TrainSettings,
)


def make_optimizer(
    params: Sequence[nn.Parameter], settings: TrainSettings
) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
    kind = torch.optim.Adam if settings.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=settings.lr, weight_decay=settings.weight_decay)


def apply_masks(state: TrainState, buffers: bool = False) -> None:
    """Zero every masked-out weight, and its optimizer buffers (momentum, moments) when asked or
    when its mask changed. With gradients zeroed before each step, the buffers of a pruned entry
    stay zero once zeroed: plain and decoupled weight decay of a zero weight are zero too."""
    with torch.no_grad():
        for name in state.masks:
            param = state.params[name]
            factor, changed = state.factor(name)
            param.mul_(factor)
            if not (buffers or changed):
                continue
            for buffer in state.optimizer.state.get(param, {}).values():
                if isinstance(buffer, torch.Tensor) and buffer.shape == param.shape:
                    buffer.mul_(factor)


def _mask_gradients(state: TrainState) -> None:
    for name in state.masks:
        grad = state.params[name].grad
        if grad is not None:
            grad.mul_(state.factor(name)[0])


def _check_masks(masks: dict[str, torch.Tensor], params: dict[str, nn.Parameter]) -> None:
    for name, keep in masks.items():
        if name not in params:
            raise BadInput(f"mask for {name!r}, which is not a parameter of the model")
        if tuple(keep.shape) != tuple(params[name].shape):
            raise BadInput(
                f"mask for {name!r} has shape {list(keep.shape)}, the weight {list(params[name].shape)}"
            )


def train(
    module: nn.Module,
    masks: dict[str, torch.Tensor],
    data: Dataset,
    settings: TrainSettings,
    hooks: Iterable[TrainHook] = (),
    progress: TrainProgress | None = None,
) -> TrainResult:
    """Train ``module`` in place on ``data`` with ``masks`` (name → bool, True = keep) held.

    Deterministic given ``settings.seed``: batch order comes from the data's seeded stream and
    dropout from a forked, seeded torch generator. On a NaN or infinite loss the module gets the
    weights of the last completed epoch (or the start) back and :class:`TrainingDiverged` is
    raised.
    """
    settings.check()
    train_set, test_set = split_data(data, settings.val_fraction, settings.seed)
    device = distributed.local_device(settings.device)
    module.to(device)
    params = dict(module.named_parameters())
    masks = {name: keep.to(device=device, dtype=torch.bool) for name, keep in masks.items()}
    _check_masks(masks, params)
    for param in params.values():
        param.requires_grad_(True)
    steps_per_epoch = max(len(train_set) // min(settings.batch_size, len(train_set)), 1)
    total = settings.steps if settings.steps is not None else settings.epochs * steps_per_epoch
    optimizer = make_optimizer(list(params.values()), settings)
    state = TrainState(
        module, masks, params, optimizer, settings, train_set, total, steps_per_epoch
    )
    state.network = distributed.wrap(module, device)
    hooks = list(hooks)
    with torch.random.fork_rng(devices=[torch.device(device)] if device.startswith("cuda") else []):
        torch.manual_seed(settings.seed)
        return _run(state, hooks, test_set, progress)


def _run(
    state: TrainState,
    hooks: list[TrainHook],
    test_set: Dataset | None,
    progress: TrainProgress | None,
) -> TrainResult:
    settings, module = state.settings, state.module
    device = next(module.parameters()).device
    started = time.perf_counter()
    scheduler = _scheduler(state.optimizer, settings, state.total_steps)
    good = _snapshot(module)
    history: list[EpochRecord] = []
    sums = [0.0, 0, 0]  # loss × samples, correct, samples in this epoch
    set_mode(module, True)
    for hook in hooks:
        hook.on_start(state)
    apply_masks(state, buffers=True)
    batches = state.data.batches(settings.batch_size, state.total_steps, settings.seed)
    checked = False
    for x, y in batches:
        state.epoch = state.step // state.steps_per_epoch + 1
        x, y = distributed.shard(x, y)
        state.batch = (x.to(device), y.to(device))
        with explain_forward_errors(state.data, None, len(y)):
            state.logits = state.network(state.batch[0])
        if not checked:
            check_label_range(state.data, logits_width(state.logits))
            checked = True
        state.loss = F.cross_entropy(state.logits, state.batch[1])
        if not torch.isfinite(state.loss):
            what = f"the loss became {float(state.loss.detach())}"
            _diverged(state, good, history, started, what, state.step + 1)
        state.optimizer.zero_grad(set_to_none=True)
        state.loss.backward()
        _mask_gradients(state)
        for hook in hooks:
            hook.after_backward(state)
        state.optimizer.step()
        scheduler.step()
        state.step += 1
        apply_masks(state)
        if hooks:
            for hook in hooks:
                hook.on_step_end(state)
            apply_masks(state)  # hooks may have replaced the masks
        _accumulate(sums, state)
        if progress:
            progress(state.step, state.total_steps, _running(sums))
        end_of_epoch = state.step % state.steps_per_epoch == 0 or state.step == state.total_steps
        if end_of_epoch or state.stop:
            history.append(
                _end_epoch(state, hooks, test_set, sums, state.step == state.total_steps)
            )
            if not all(bool(torch.isfinite(p).all()) for p in state.params.values()):
                what = "the weights became non-finite"
                _diverged(state, good, history[:-1], started, what, state.step)
            good = _snapshot(module)
            sums = [0.0, 0, 0]
        if state.stop:
            break
    set_mode(module, False)
    final = history[-1] if history else None
    if final is not None and final.test_accuracy is None and test_set is not None:
        final.test_loss, final.test_accuracy = _evaluate(module, test_set, settings)
    return TrainResult(
        history,
        state.step,
        time.perf_counter() - started,
        final.test_loss if final else None,
        final.test_accuracy if final else None,
        state.stop_reason if state.stop else None,
        {hook.key: s for hook in hooks if (s := hook.summary()) is not None},
    )


def _end_epoch(
    state: TrainState, hooks: list[TrainHook], test_set: Dataset | None, sums: list, last: bool
) -> EpochRecord:
    running = _running(sums)
    record = EpochRecord(state.epoch, state.step, running["loss"], running["accuracy"])
    if test_set is not None and (
        last or state.stop or state.epoch % state.settings.eval_every == 0
    ):
        record.test_loss, record.test_accuracy = _evaluate(state.module, test_set, state.settings)
    state.record = {}
    for hook in hooks:
        hook.on_epoch_end(state)
    apply_masks(state)
    record.extra = state.record
    set_mode(state.module, True)
    return record


def _evaluate(module: nn.Module, test_set: Dataset, settings: TrainSettings) -> tuple[float, float]:
    device = str(next(module.parameters()).device)
    return evaluate(module, test_set.x, test_set.y, max(settings.batch_size, 1000), device)


def _accumulate(sums: list, state: TrainState) -> None:
    y = state.batch[1]
    sums[0] += float(state.loss.detach()) * len(y)
    sums[1] += int((state.logits.detach().argmax(1) == y).sum())
    sums[2] += len(y)


def _running(sums: list) -> dict[str, float]:
    samples = max(sums[2], 1)
    return {"loss": sums[0] / samples, "accuracy": sums[1] / samples}


def _scheduler(
    optimizer: torch.optim.Optimizer, settings: TrainSettings, total: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if settings.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def _diverged(
    state: TrainState,
    good: dict[str, torch.Tensor],
    history: list[EpochRecord],
    started: float,
    what: str,
    step: int,
) -> None:
    with torch.no_grad():
        for name, tensor in state.module.state_dict().items():
            tensor.copy_(good[name])
    set_mode(state.module, False)
    kept = f"epoch {history[-1].epoch}" if history else "the start"
    result = TrainResult(
        history,
        state.step,
        time.perf_counter() - started,
        history[-1].test_loss if history else None,
        history[-1].test_accuracy if history else None,
        f"{what} at step {step}",
    )
    raise TrainingDiverged(
        f"training diverged: {what} at step {step} (epoch {state.epoch}); the weights of "
        f"{kept} are the last good ones",
        "lower --lr, or use --lr-schedule cosine",
        result,
    )
