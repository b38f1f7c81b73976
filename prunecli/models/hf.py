"""Hugging Face folders: the architecture from transformers (the optional ``hf`` extra).

transformers is imported only here, and only when a command needs the module (graph and data
criteria, ``retrain``); weights-only commands read the folder's safetensors directly.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from prunecli.errors import BadInput, Unsupported
from prunecli.io.jsonfile import read_json_file
from prunecli.io.pt2 import quiet_torch

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


REMOTE_CODE_HINT = "pass --trust-remote-code to run the folder's own Python code, if you trust it"
# config keys naming a limit on layers, not a count (Qwen2's max_window_layers)
_BOUNDS = ("max_", "min_")
# the slack over the stored tensors a config may add in buffers (rotary tables, masks)
_BUFFER_SLACK = 1 << 24


def remote_code(config: dict[str, Any] | None) -> list[str]:
    """What ``auto_map`` in ``config.json`` names: Python files of the folder that transformers
    would import (it asks on stdout first, or runs them when told to trust remote code)."""
    auto_map = (config or {}).get("auto_map")
    if not auto_map:
        return []
    values = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
    return [str(v) for v in values] or ["auto_map"]


def build_module(
    folder: Path, tensors: dict[str, torch.Tensor], trust_remote_code: bool = False
) -> torch.nn.Module:
    """The model class named by ``config.json``, its parameters made the file's tensors.

    The model is first built on the ``meta`` device (no memory) and compared with the stored
    tensors, so a config that asks for more than the folder holds (``{"model_type": "llama"}``
    beside one small tensor would build a 7B model) is refused before anything is allocated."""
    transformers = _transformers(folder)
    try:
        # trust_remote_code is always passed: left unset, transformers asks on stdout.
        # quiet: transformers logs its own config warnings; prunecli reports one line
        with quiet_torch():
            config = transformers.AutoConfig.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=trust_remote_code
            )
            meta = _on_meta(transformers, config, trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad config
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(
            f"{folder}/config.json: transformers cannot build this model ({detail})",
            "check model_type and the sizes in config.json",
        ) from None
    _check_fits(meta, tensors, folder, config.to_dict())
    del meta
    try:
        with quiet_torch():
            module = _instantiate(transformers, config, trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - as above
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(
            f"{folder}/config.json: transformers cannot build this model ({detail})"
        ) from None
    _load(module, tensors, folder)
    _speak_labelled_batches(module)
    return module


def meta_order(config: dict[str, Any], stored: int) -> list[str] | None:
    """The tensor names of the class ``config.json`` names, in its ``state_dict`` order, built on
    the ``meta`` device (no memory) from the parsed ``config``; None when it cannot be built, or
    when the config claims more layers than the folder has tensors (a hostile config would take
    long to build)."""
    if max(layer_counts(config), default=0) > stored:
        return None
    try:
        import transformers

        with quiet_torch():
            # a copy: some config classes fill in their nested dicts (text_config) in place
            built = transformers.AutoConfig.for_model(**copy.deepcopy(config))
            return list(_on_meta(transformers, built, False).state_dict())
    except Exception:  # noqa: BLE001 - only the report's row order depends on it
        return None


def layer_counts(config: dict[str, Any]) -> list[int]:
    """The integers under keys naming layers (``n_layer``, ``num_hidden_layers``, …), nested
    configs (``text_config``) included: each layer holds at least one tensor. A bound
    (``max_window_layers``: Qwen2's layers with full attention, 28 by default whatever the
    model's depth) counts no layers."""
    counts = []
    for key, value in config.items():
        lowered = str(key).lower()
        if isinstance(value, dict):
            counts += layer_counts(value)
        elif type(value) is int and "layer" in lowered and not lowered.startswith(_BOUNDS):
            counts.append(value)
    return counts


def _on_meta(transformers: Any, config: Any, trust_remote_code: bool) -> torch.nn.Module:
    """The model of ``config`` on the ``meta`` device: its names and shapes, no memory."""
    # eager attention: the fused CPU kernels have no second derivative, which grasp needs
    config._attn_implementation = "eager"
    with torch.device("meta"):
        return _instantiate(transformers, config, trust_remote_code)


def _instantiate(transformers: Any, config: Any, trust_remote_code: bool) -> torch.nn.Module:
    names = list(getattr(config, "architectures", None) or [])
    model_class = getattr(transformers, names[0], None) if names else None
    if isinstance(model_class, type) and issubclass(model_class, torch.nn.Module):
        return model_class(config)
    return transformers.AutoModel.from_config(config, trust_remote_code=trust_remote_code)


def _check_fits(
    meta: torch.nn.Module, tensors: dict[str, torch.Tensor], folder: Path, config: dict[str, Any]
) -> None:
    """Every tensor the config's model holds is stored with the same shape (tied ones aside),
    and the model's buffers stay within a small slack of the stored size."""
    expected = meta.state_dict()
    tied = _tied(meta, by_identity=True)
    for name, tensor in expected.items():
        if name not in tensors:
            continue
        stored, wanted = tuple(tensors[name].shape), tuple(tensor.shape)
        if stored != wanted:
            raise BadInput(
                f"{folder}/config.json says {_sizes(config, wanted, stored)} but "
                f"{name} is {_shape(stored)}",
                "the config.json and the weights must come from the same model",
            )
    extra = [name for name in tensors if name not in expected]
    if extra:
        raise BadInput(
            f"{folder} does not fit its config.json: tensor {extra[0]!r} "
            "has no place in the architecture"
        )
    params = {name for name, _ in meta.named_parameters()}
    missing = [n for n in expected if n in params and n not in tensors and n not in tied]
    if missing:
        raise BadInput(f"{folder} lacks tensor {missing[0]!r}, which its config.json needs")
    built = sum(t.numel() for t in meta.parameters()) + sum(b.numel() for b in meta.buffers())
    stored_numel = sum(t.numel() for t in tensors.values())
    if built > 2 * stored_numel + _BUFFER_SLACK:
        raise BadInput(
            f"{folder}/config.json builds a model of {built:,} values, but the folder stores "
            f"{stored_numel:,}",
            "the config.json and the weights must come from the same model",
        )


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape) if shape else "a scalar"


# config keys that set a dimension, said first when several hold the differing value
_SIZE_KEY = re.compile(r"(_size|_dim|^n_embd|^d_model|^dim)$")


def _sizes(config: dict[str, Any], wanted: tuple[int, ...], stored: tuple[int, ...]) -> str:
    """``vocab_size 32000, hidden_size 4096``: the config entries behind the dimensions that
    differ from the stored ones (the shape itself when no entry has that value)."""
    said = []
    for index, dim in enumerate(wanted):
        if index < len(stored) and stored[index] == dim:
            continue
        keys = [k for k, v in config.items() if type(v) is int and v == dim]
        keys.sort(key=lambda k: not _SIZE_KEY.search(k))  # hidden_size before chunk_size_…
        said.append(f"{keys[0]} {dim}" if keys else f"dimension {index} is {dim}")
    return ", ".join(dict.fromkeys(said)) or f"the shape is {_shape(wanted)}"


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


def _tied(module: torch.nn.Module, by_identity: bool = False) -> set[str]:
    """Parameter names that share storage with another parameter (tied weights); on the meta
    device, where no tensor has storage, those that are the same parameter."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for name, param in module.named_parameters(remove_duplicate=False):
        key = id(param) if by_identity else param.data_ptr()
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


def build_skeleton(
    folder: Path,
    stored: dict[str, tuple[int, ...]],
    trust_remote_code: bool = False,
    meta_only: bool = False,
) -> torch.nn.Module:
    """The model class named by ``config.json`` with its parameters on the ``meta`` device (no
    memory) and its buffers real (rotary tables, position ids: computed, not stored), for the
    block runner to fill one part at a time. ``stored`` is the folder's tensor shapes: the
    config must fit them (as in ``build_module``) before anything is allocated. ``meta_only``:
    the buffers on ``meta`` too (shapes only, for counting MACs: one build instead of two)."""
    transformers = _transformers(folder)
    config_dict = read_config(folder)
    named = remote_code(config_dict)
    if named and not trust_remote_code:
        raise Unsupported(
            f"{folder}/config.json names the folder's own Python code (auto_map: {named[0]}), "
            "which prunecli does not run on its own",
            REMOTE_CODE_HINT,
        )
    if max(layer_counts(config_dict), default=0) > len(stored):
        raise BadInput(
            f"{folder}/config.json claims more layers than the folder has tensors ({len(stored)})"
        )
    try:
        with quiet_torch():
            config = transformers.AutoConfig.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=trust_remote_code
            )
            meta = _on_meta(transformers, config, trust_remote_code)
        stand_ins = {name: torch.empty(shape, device="meta") for name, shape in stored.items()}
        _check_fits(meta, stand_ins, folder, config.to_dict())
        if meta_only:
            return meta.eval()
        del meta
        with quiet_torch(), _parameters_on_meta():
            module = _instantiate(transformers, config, trust_remote_code)
    except (BadInput, Unsupported):
        raise
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad config
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(
            f"{folder}/config.json: transformers cannot build this model ({detail})",
            "check model_type and the sizes in config.json",
        ) from None
    return module.eval()


def read_config(folder: Path) -> dict[str, Any]:
    config = read_json_file(folder / "config.json")
    if not isinstance(config, dict):
        raise BadInput(f"{folder}/config.json must hold a JSON object")
    return config


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build modules with every parameter moved to ``meta`` as it is registered, buffers left
    where they are (accelerate's ``init_empty_weights(include_buffers=False)``)."""
    register = torch.nn.Module.register_parameter

    def on_meta(module: torch.nn.Module, name: str, param: Any) -> None:
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            moved = param.to("meta")
            module._parameters[name] = type(param)(moved, requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register  # type: ignore[method-assign]


def _transformers(folder: Path) -> Any:
    """The transformers module, or Unsupported saying that ``folder`` needs it."""
    try:
        import transformers
    except ImportError:
        raise Unsupported(
            f"{folder} is a Hugging Face folder; building its architecture needs transformers",
            INSTALL_HINT,
        ) from None
    return transformers
