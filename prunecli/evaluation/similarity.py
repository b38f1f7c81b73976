"""How close a model's outputs stay to a reference (the dense model it was pruned from): mean
cosine per sample and top-1 agreement."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunecli.data.labelled import set_mode
from prunecli.errors import BadInput

# (vectors to compare per sample [n, d], top-1 predictions [n, ...]) of one batch
Outputs = tuple[torch.Tensor, torch.Tensor]


def classifier_outputs(module: nn.Module, x: torch.Tensor) -> Outputs:
    logits = module(x).float()
    return logits, logits.argmax(-1)


def token_outputs(module: nn.Module, ids: torch.Tensor, causal: bool) -> Outputs:
    """The attention-masked mean of the last hidden state per sample and, for a causal LM, the
    next-token argmax at every position (an encoder: none to agree on)."""
    mask = torch.ones_like(ids)
    output = module.forward(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    hidden = output.hidden_states[-1].float()
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    if causal:
        return pooled, output.logits.argmax(-1)
    return pooled, torch.empty(0)


def _batches(inputs: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(inputs), size):
        yield inputs[start : start + size]


def similarity(
    model: nn.Module,
    reference: nn.Module,
    inputs: torch.Tensor,
    outputs: Callable[[nn.Module, torch.Tensor], Outputs],
    batch_size: int,
    device: str = "cpu",
) -> tuple[float, float | None]:
    """(mean cosine over samples, fraction of equal top-1 predictions or None)."""
    cosines: list[torch.Tensor] = []
    agree, compared = 0, 0
    for module in (model, reference):
        module.to(device)
        set_mode(module, False)
    with torch.no_grad():
        for batch in _batches(inputs, batch_size):
            batch = batch.to(device)
            ours, our_top = outputs(model, batch)
            theirs, their_top = outputs(reference, batch)
            if ours.shape != theirs.shape:
                raise BadInput(
                    f"the reference's outputs have shape {list(theirs.shape)}, the model's "
                    f"{list(ours.shape)}",
                    "compare a pruned model with the dense model it came from",
                )
            cosines.append(F.cosine_similarity(ours, theirs, dim=-1).cpu())
            agree += int((our_top == their_top).sum())
            compared += our_top.numel()
    cosine = float(torch.cat(cosines).double().mean())
    return cosine, (agree / compared if compared else None)


def similarity_entries(
    cosine: float,
    agreement: float | None,
    samples: int,
    source: str,
    reference: str,
    kind: str,
) -> list[dict[str, Any]]:
    """The quality entries of a comparison of two models of ``kind``."""
    what = "logits" if kind == "classifier" else "attention-masked mean last hidden states"
    unit = (
        f"next-token predictions at every position of {samples} samples"
        if kind == "causal-lm"
        else f"{samples} samples"
    )
    common = {"reference": reference, "data": source, "samples": samples}
    entries = [
        {
            "metric": "cosine_similarity",
            "value": cosine,
            **common,
            "protocol": f"mean over {samples} samples of {source} of the cosine between the "
            f"two models' {what}",
        }
    ]
    if agreement is not None:
        entries.append(
            {
                "metric": "top1_agreement",
                "value": agreement,
                **common,
                "protocol": f"fraction of the {unit} of {source} where "
                "the two models' top-1 (argmax) predictions are equal",
            }
        )
    return entries


def module_outputs(kind: str) -> Callable[[nn.Module, torch.Tensor], Outputs]:
    """The outputs compared for a model of ``kind``: classifier, causal-lm or encoder."""
    if kind == "classifier":
        return classifier_outputs
    causal = kind == "causal-lm"
    return lambda module, ids: token_outputs(module, ids, causal)
