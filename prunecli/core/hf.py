"""Hugging Face folders: the architecture from transformers (the optional ``hf`` extra).

transformers is imported only here, and only when a command needs the module (graph and data
criteria, ``retrain``); weights-only commands read the folder's safetensors directly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from prunecli.errors import BadInput, Unsupported

INSTALL_HINT = "install the extra: pip install 'prunecli[hf]'"
# output heads of transformers' task models: left dense unless --include names them
_HEADS = re.compile(r"^(lm_head|score|classifier|qa_outputs|cls)(\.|$)")


def is_head(name: str) -> bool:
    return _HEADS.match(name) is not None


def transformers_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def build_module(folder: Path, tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The model class named by ``config.json``, its parameters made the file's tensors."""
    try:
        import transformers
    except ImportError:
        raise Unsupported(
            f"{folder} is a Hugging Face folder; building its architecture needs transformers",
            INSTALL_HINT,
        ) from None
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        # eager attention: the fused CPU kernels have no second derivative, which grasp needs
        config._attn_implementation = "eager"
        names = list(getattr(config, "architectures", None) or [])
        model_class = getattr(transformers, names[0], None) if names else None
        module = model_class(config) if model_class else transformers.AutoModel.from_config(config)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad config
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(
            f"{folder}/config.json: transformers cannot build this model ({detail})",
            "check model_type and the sizes in config.json",
        ) from None
    _load(module, tensors, folder)
    _speak_labelled_batches(module)
    return module


def _speak_labelled_batches(module: torch.nn.Module) -> None:
    """Let prunecli's training and data criteria call the model as they call any classifier:
    ``module(x)`` → logits ``[batch, classes]``. A token model takes ``x`` as token ids (the
    data sources give float32 samples; ids are whole numbers, exact in float32 below 2^24) and
    is trained to predict the token that follows each sample (the logits at its last position).
    Hooks, not a wrapper: the parameter names must stay those of the file."""
    tokens = getattr(module, "main_input_name", None) == "input_ids"

    def ids(_: torch.nn.Module, args: tuple) -> tuple | None:
        if tokens and args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            return (args[0].long(), *args[1:])
        return None

    def logits(_: torch.nn.Module, args: tuple, output: object) -> object:
        result = getattr(output, "logits", output)
        if tokens and isinstance(result, torch.Tensor) and result.dim() == 3:
            return result[:, -1, :]
        return result

    module.register_forward_pre_hook(ids)
    module.register_forward_hook(logits)


def _load(module: torch.nn.Module, tensors: dict[str, torch.Tensor], folder: Path) -> None:
    result = module.load_state_dict(tensors, strict=False, assign=True)
    if result.unexpected_keys:
        raise BadInput(
            f"{folder} does not fit its config.json: tensor {result.unexpected_keys[0]!r} "
            "has no place in the architecture"
        )
    if hasattr(module, "tie_weights"):
        module.tie_weights()  # a tied head is not stored: it shares the embedding's tensor
    stored = set(tensors)
    params = {name for name, _ in module.named_parameters()}
    missing = [name for name in result.missing_keys if name in params and name not in stored]
    tied = _tied(module)
    missing = [name for name in missing if name not in tied]
    if missing:
        raise BadInput(f"{folder} lacks tensor {missing[0]!r}, which its config.json needs")
    module.eval()


def _tied(module: torch.nn.Module) -> set[str]:
    """Parameter names that share storage with another parameter (tied weights)."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for name, param in module.named_parameters(remove_duplicate=False):
        key = param.data_ptr()
        if key in seen:
            tied.update({name, seen[key]})
        seen[key] = name
    return tied


def check_criterion(model_hf: dict[str, Any] | None, method: str, needs: tuple[str, ...]) -> None:
    """Token models take ids, not the all-ones float input that input-shape criteria use."""
    if model_hf is not None and "input_shape" in needs:
        raise Unsupported(
            f"--method {method} feeds an all-ones float input of --input-shape; a Hugging Face "
            "model takes token ids, so it cannot run here",
            "use magnitude or random, or a data criterion (snip, grasp) with --data",
        )
