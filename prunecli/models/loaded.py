"""Model resolution (DESIGN §2): named tensors, plus a module when the architecture is known."""

from __future__ import annotations

import copy
import importlib
import json
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prunecli.errors import BadInput, PrunecliError, Unsupported
from prunecli.io import bitmask
from prunecli.io import safetensors as st
from prunecli.io.inputs import check_input
from prunecli.io.jsonfile import parse_json
from prunecli.io.load import load_file
from prunecli.io.paths import STDIO
from prunecli.models.resize import META_STRUCTURE, resize_to
from prunecli.version import __version__

# safetensors metadata keys written by prunecli (documented in docs/formats.md)
META_ARCH = "prunecli.arch"
META_ARCH_KWARGS = "prunecli.arch_kwargs"
META_INPUT_SHAPE = "prunecli.input_shape"
META_NUM_CLASSES = "prunecli.num_classes"


@dataclass
class Architecture:
    name: str  # a zoo name or ``pkg.module:factory``
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None


@dataclass
class LoadedModel:
    """Tensors in file order; when ``module`` is set its parameters *are* these tensors."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    source: str
    format: str  # "safetensors" or "pt2"
    file_bytes: int | None
    module: torch.nn.Module | None = None
    arch: Architecture | None = None
    program: Any = None  # the torch.export program of a .pt2 input
    arch_hint: str | None = None  # an import path seen in metadata but not imported
    onnx: Any = None  # the onnx.ModelProto of an .onnx input (its tensors are the initializers)
    weight_names: list[str] | None = None  # ONNX: initializers that are MatMul/Gemm/Conv weights
    checkpoint: Any = None  # io.checkpoint.Checkpoint: the shards of a folder or file on disk
    hf_config: dict[str, Any] | None = None  # config.json of a Hugging Face folder
    remote_code: list[str] | None = None  # what its auto_map names (not run without opt-in)

    def require_graph(self, method: str) -> torch.nn.Module:
        if self.module is not None:
            return self.module
        if self.format == "onnx":
            raise Unsupported(
                f"{method} needs a PyTorch graph; an ONNX model supports inspect and the "
                "weights-only methods (magnitude, random)",
                "run it on the PyTorch model (with --arch), then export to ONNX",
            )
        if self.remote_code:
            from prunecli.models.hf import REMOTE_CODE_HINT

            raise Unsupported(
                f"{method} needs the model's architecture; {self.source}/config.json names the "
                f"folder's own Python code (auto_map: {self.remote_code[0]}), which prunecli "
                "does not run on its own",
                REMOTE_CODE_HINT,
            )
        if self.hf_config is not None:
            from prunecli.models.hf import INSTALL_HINT

            raise Unsupported(
                f"{method} needs the model's architecture; {self.source} is a Hugging Face "
                "folder and transformers is not installed",
                INSTALL_HINT,
            )
        if self.arch_hint:
            raise Unsupported(
                f"{method} needs the model's architecture; the file names {self.arch_hint!r}, "
                "which prunecli does not import on its own",
                f"pass --arch {self.arch_hint} to use it",
            )
        raise Unsupported(
            f"{method} needs the model's architecture, and {self.source} holds weights only",
            "pass --arch NAME (see `prunecli init --help`) or --arch pkg.module:factory, "
            "or give a .pt2 program",
        )


def copy_module(module: torch.nn.Module) -> torch.nn.Module:
    """A private copy of ``module`` (weights and buffers); copying a ``.pt2`` graph module trips
    a deprecation warning inside torch that is not the user's business."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(module)


def parse_arch_kwargs(text: str | None, origin: str = "--arch-kwargs") -> dict[str, Any]:
    """JSON keyword arguments; ``origin`` names where they came from in error messages."""
    if not text:
        return {}
    value = parse_json(text, origin)
    if not isinstance(value, dict):
        raise BadInput(f"{origin} must be a JSON object, e.g. '{{\"widths\": [40, 100, 10]}}'")
    return value


def load_model(
    source: str,
    arch: str | None = None,
    arch_kwargs: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load ``source`` (a path or ``-``) and, when known, build its architecture around it.

    ``trust_remote_code``: a Hugging Face folder whose config.json names its own Python code
    (``auto_map``) is built by running that code; without it such a folder is weights-only."""
    if source != STDIO and Path(source).suffix == ".pt2":
        if arch:
            raise BadInput("a .pt2 program carries its own graph; drop --arch")
        return _load_pt2(Path(source))
    if source != STDIO and Path(source).suffix == ".onnx":
        if arch:
            raise BadInput("an ONNX model carries its own graph; drop --arch")
        return _load_onnx(Path(source))
    if source != STDIO and Path(source).is_dir():
        return _load_folder(source, arch, arch_kwargs, trust_remote_code)
    tensors, header, size = _read_safetensors(source)
    model = LoadedModel(tensors, header.metadata, source, "safetensors", size)
    architecture = _architecture(model.metadata, arch, arch_kwargs, source)
    if architecture is None:
        stored = model.metadata.get(META_ARCH)
        model.arch_hint = stored if stored and ":" in stored else None
        return model
    _attach(model, architecture)
    return model


def _load_folder(
    source: str, arch: str | None, arch_kwargs: str | None, trust_remote_code: bool
) -> LoadedModel:
    """A sharded or Hugging Face folder, all in memory; its module from transformers if known."""
    from prunecli.io.checkpoint import open_checkpoint
    from prunecli.models import hf

    checkpoint = open_checkpoint(source)
    tensors: dict[str, torch.Tensor] = {}
    for shard in checkpoint.shards:
        tensors.update(load_file(shard.path)[0])
    model = LoadedModel(
        tensors, dict(checkpoint.metadata), source, "safetensors", checkpoint.file_bytes
    )
    model.checkpoint, model.hf_config = checkpoint, checkpoint.config
    if arch is not None:
        _attach(model, Architecture(arch, parse_arch_kwargs(arch_kwargs)))
    elif checkpoint.config is not None and hf.transformers_available():
        model.remote_code = hf.remote_code(checkpoint.config)
        if not model.remote_code or trust_remote_code:
            model.module = hf.build_module(Path(source), tensors, trust_remote_code)
    return model


def _read_safetensors(source: str) -> tuple[dict[str, torch.Tensor], st.Header, int]:
    if source == STDIO:
        from prunecli.io.stdin import read_stream

        return read_stream(sys.stdin.buffer, "standard input")
    path = Path(source)
    check_input(path, source)
    tensors, header = load_file(path)
    return tensors, header, path.stat().st_size


def _architecture(
    metadata: dict[str, str], arch: str | None, kwargs_text: str | None, source: str
) -> Architecture | None:
    """The architecture asked for with ``--arch``, else a zoo name from trusted metadata."""
    from prunecli.models import zoo

    if arch is None:
        stored = metadata.get(META_ARCH)
        if not stored or not zoo.is_zoo_name(stored):
            return None  # import paths in metadata are never imported on their own
        arch = stored
    if kwargs_text is None and arch == metadata.get(META_ARCH):
        kwargs = parse_arch_kwargs(
            metadata.get(META_ARCH_KWARGS), f"{source}: metadata {META_ARCH_KWARGS}"
        )
    else:
        kwargs = parse_arch_kwargs(kwargs_text)
    architecture = Architecture(arch, kwargs)
    shape = _metadata_json(metadata, META_INPUT_SHAPE, source)
    if shape is not None:
        if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
            raise BadInput(f"{source}: metadata {META_INPUT_SHAPE} must list positive integers")
        architecture.input_shape = tuple(shape)
    classes = _metadata_json(metadata, META_NUM_CLASSES, source)
    if classes is not None:
        if not isinstance(classes, int) or classes < 1:
            raise BadInput(f"{source}: metadata {META_NUM_CLASSES} must be a positive integer")
        architecture.num_classes = classes
    return architecture


def _metadata_json(metadata: dict[str, str], key: str, source: str) -> Any:
    if key not in metadata:
        return None
    return parse_json(metadata[key], f"{source}: metadata {key}")


def build_module(architecture: Architecture) -> torch.nn.Module:
    """Instantiate ``architecture`` (zoo or user factory), filling in its input shape and classes."""
    from prunecli.models import zoo

    if zoo.is_zoo_name(architecture.name):
        built = zoo.build_arch(architecture.name, architecture.kwargs)
        architecture.input_shape = built.input_shape
        architecture.num_classes = built.num_classes
        return built.module
    module = _call_factory(
        architecture.name, _import_factory(architecture.name), architecture.kwargs
    )
    if isinstance(module, zoo.ZooModel):
        architecture.input_shape, architecture.num_classes = module.input_shape, module.num_classes
        module = module.module
    if not isinstance(module, torch.nn.Module):
        raise BadInput(
            f"--arch {architecture.name} returned {type(module).__name__}, not a torch.nn.Module"
        )
    architecture.input_shape = architecture.input_shape or getattr(module, "input_shape", None)
    return module


# pkg.module:factory — dotted identifiers, a colon, an identifier; nothing relative
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def _import_factory(spec: str) -> Any:
    from prunecli.models import zoo

    if ":" not in spec:
        zoo.build_arch(spec)  # raises the unknown-architecture error with a suggestion
    if not _IMPORT_PATH.match(spec):
        raise BadInput(
            f"--arch {spec!r} is neither a zoo name nor an import path",
            "write pkg.module:factory (a module importable from here, then the function)",
        )
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise BadInput(f"cannot import --arch {spec}: {exc}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's module failed to import
        raise BadInput(f"cannot import --arch {spec}: {_one_line(exc)}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise BadInput(f"cannot import --arch {spec}: {module_name} has no attribute {attr!r}")
    if not callable(factory):
        raise BadInput(f"--arch {spec} is not callable")
    return factory


def _call_factory(spec: str, factory: Any, kwargs: dict[str, Any]) -> Any:
    """The user's factory is the user's code: its failure is a bad input (exit 2) naming it."""
    try:
        return factory(**kwargs)
    except PrunecliError:
        raise  # e.g. a zoo build with bad kwargs inside the factory: already says what is wrong
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever the factory raises
        raise BadInput(f"--arch {spec} failed to build the model: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _check_fit(model: LoadedModel, architecture: Architecture, expected: dict[str, Any]) -> None:
    """The file's tensors are exactly the architecture's, shape for shape."""
    for name, tensor in expected.items():
        if name not in model.tensors:
            raise BadInput(
                f"{model.source} does not fit {architecture.name}: tensor {name!r} "
                f"(shape {list(tensor.shape)}) is missing from the file"
            )
        if tuple(model.tensors[name].shape) != tuple(tensor.shape):
            raise BadInput(
                f"{model.source} does not fit {architecture.name}: tensor {name!r} has shape "
                f"{list(model.tensors[name].shape)} in the file but {list(tensor.shape)} in the architecture"
            )
    extra = [name for name in model.tensors if name not in expected]
    if extra:
        raise BadInput(
            f"{model.source} does not fit {architecture.name}: the file has tensor {extra[0]!r}, which the architecture lacks"
        )


def _attach(model: LoadedModel, architecture: Architecture) -> None:
    """Build the module and make its parameters the file's tensors, or say where they differ.

    A zoo architecture is compared on the meta device first: its kwargs (from the command line
    or the file's metadata) must not allocate anything the stored tensors do not fill."""
    from prunecli.models import zoo

    structured = META_STRUCTURE in model.metadata
    if zoo.is_zoo_name(architecture.name):
        meta = zoo.build_arch(architecture.name, architecture.kwargs, device="meta")
        if structured:
            resize_to(meta.module, model.tensors, model.source)
        _check_fit(model, architecture, meta.module.state_dict())
        if structured:
            _check_runs(meta.module, meta.input_shape, model.source)
    module = build_module(architecture)
    if structured:  # the smaller layers a structured prune wrote (models/resize.py)
        resize_to(module, model.tensors, model.source)
    _check_fit(model, architecture, module.state_dict())
    module.load_state_dict(model.tensors, strict=True, assign=True)
    module.eval()
    model.module = module
    model.arch = architecture


def _check_runs(module: torch.nn.Module, input_shape: tuple[int, ...], source: str) -> None:
    """A forward pass on the meta device (shapes only): the stored widths fit together."""
    try:
        with torch.no_grad():
            module(torch.empty(1, *input_shape, device="meta"))
    except Exception as exc:  # noqa: BLE001 - any shape mismatch in the user-supplied file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"{source}: the stored layer widths do not fit together: {first}") from None


def _load_pt2(path: Path) -> LoadedModel:
    from prunecli.io.pt2 import load_program, quiet_torch

    check_input(path)
    program = load_program(path)
    tensors = dict(program.state_dict)
    example = program.example_inputs[0] if program.example_inputs else ()
    shape = (
        tuple(example[0].shape[1:]) if example and isinstance(example[0], torch.Tensor) else None
    )
    arch = Architecture("torch.export", input_shape=shape)
    with quiet_torch():  # unlifting the program warns about torch's own deprecations
        module = program.module()
    return LoadedModel(tensors, {}, str(path), "pt2", path.stat().st_size, module, arch, program)


def _load_onnx(path: Path) -> LoadedModel:
    from prunecli.io.onnx import read_onnx

    read = read_onnx(path)
    model = LoadedModel(read.tensors, read.metadata, str(path), "onnx", path.stat().st_size)
    model.onnx, model.weight_names = read.proto, read.weights
    return model


def model_metadata(model: LoadedModel, extra: Mapping[str, Any]) -> dict[str, str]:
    """The input's metadata, updated with the architecture and ``extra`` (prefixed ``prunecli.``)."""
    metadata = dict(model.metadata)
    for key in bitmask.METADATA_KEYS:  # the layout of the input file, not of this one
        metadata.pop(key, None)
    metadata["format"] = "pt"
    metadata["prunecli.version"] = __version__
    arch = model.arch
    if arch is not None and model.format != "pt2":
        metadata[META_ARCH] = arch.name
        metadata[META_ARCH_KWARGS] = json.dumps(arch.kwargs, sort_keys=True)
        if arch.input_shape:
            metadata[META_INPUT_SHAPE] = json.dumps(list(arch.input_shape))
        if arch.num_classes:
            metadata[META_NUM_CLASSES] = str(arch.num_classes)
    for key, value in extra.items():
        metadata[f"prunecli.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return metadata
