"""Quality figures of one model: accuracy and cross-entropy of a classifier, perplexity of a
causal language model. Each figure is one entry ``{"metric", "value", "protocol", ...}`` of the
report's ``quality`` block (docs/evaluation.md states every protocol)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunecli.calibration.data import too_few_tokens
from prunecli.data.labelled import Dataset, set_mode
from prunecli.errors import BadInput
from prunecli.training.evaluation import evaluate

DEFAULT_BATCH_SIZE = 1000  # classifier samples per forward pass
DEFAULT_LM_BATCH = 1  # windows per forward pass of a language model (logits are L × vocab)


def eval_split(data: Dataset) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x, y, split name): the data's test split, else all of it."""
    if data.x_test is not None and data.y_test is not None:
        return data.x_test, data.y_test, "test"
    return data.x, data.y, "all"


def classifier_quality(
    module: nn.Module, data: Dataset, batch_size: int | None = None, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Top-1 accuracy and mean cross-entropy on the test split (or all the data)."""
    x, y, split = eval_split(data)
    module.to(device)
    loss, accuracy = evaluate(module, x, y, batch_size or DEFAULT_BATCH_SIZE, device)
    samples = (
        f"{len(y)} samples of the test split of" if split == "test" else f"all {len(y)} samples of"
    )
    protocol = (
        f"{samples} {data.name}, eval mode, no gradients; "
        "top-1 accuracy of the logits, mean cross-entropy (natural log) of their softmax"
    )
    common = {"data": data.name, "split": split, "samples": int(len(y)), "protocol": protocol}
    return [
        {"metric": "accuracy", "value": accuracy, **common},
        {"metric": "cross_entropy", "value": loss, **common},
    ]


def lm_logits(module: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
    """The full output of a transformers model on ``ids``. ``forward`` is called directly: the
    hooks prunecli puts on the module (models/hf.py) would keep the last position only."""
    kwargs: dict[str, Any] = {"input_ids": ids, "use_cache": False}
    if mask is not None:
        kwargs["attention_mask"] = mask
    return module.forward(**kwargs)


def split_windows(stream: torch.Tensor, seq_len: int, source: str) -> torch.Tensor:
    """The token stream cut into non-overlapping windows of ``seq_len``; the tail that does not
    fill a window is left out."""
    count = stream.numel() // seq_len
    if count < 1:
        raise too_few_tokens(source, stream.numel(), seq_len)
    return stream[: count * seq_len].view(count, seq_len).to(torch.int64)


def perplexity(
    module: nn.Module,
    windows: torch.Tensor,
    source: str,
    batch_size: int | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """exp(mean negative log-likelihood) of tokens 2..L of every window (Wanda, SparseGPT);
    ``progress(windows done, windows)`` after each batch."""
    count, seq_len = windows.shape
    if seq_len < 2:
        raise BadInput("--seq-len must be at least 2 for perplexity (a token is predicted)")
    module.to(device)
    was_training = module.training
    set_mode(module, False)
    total, tokens = 0.0, 0
    step = batch_size or DEFAULT_LM_BATCH
    try:
        with torch.no_grad():
            for start in range(0, count, step):
                ids = windows[start : start + step].to(device)
                logits = lm_logits(module, ids).logits[:, :-1].float()
                targets = ids[:, 1:]
                nll = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
                )
                total += float(nll)
                tokens += targets.numel()
                if progress is not None:
                    progress(min(start + step, count), count)
    finally:
        set_mode(module, was_training)
    mean = total / tokens
    return {
        "metric": "perplexity",
        "value": math.exp(mean) if mean < 700 else math.inf,
        "mean_nll": mean,
        "data": source,
        "windows": int(count),
        "seq_len": int(seq_len),
        "tokens_scored": int(tokens),
        "protocol": (
            f"{count} non-overlapping windows of {seq_len} tokens of {source}, NLL of tokens "
            f"2..{seq_len} of each window; perplexity = exp(mean token NLL)"
        ),
    }
