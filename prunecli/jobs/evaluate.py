"""`eval`: quality figures of a model (accuracy, perplexity, similarity to a reference) and its
measured latency, in the report's ``quality`` block (docs/evaluation.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prunecli.data.labelled import Dataset
from prunecli.errors import BadInput, Unsupported
from prunecli.evaluation.latency import (
    DEFAULT_REPEATS,
    latency_entry,
    time_forward,
    time_pair,
    with_reference,
)
from prunecli.evaluation.metrics import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LM_BATCH,
    classifier_quality,
    eval_split,
    lm_logits,
    perplexity,
    split_windows,
)
from prunecli.evaluation.similarity import module_outputs, similarity, similarity_entries
from prunecli.jobs.cost import add_cost
from prunecli.jobs.report import Report, build_report
from prunecli.models.loaded import LoadedModel

METRICS = ("accuracy", "perplexity", "similarity")
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json", "merges.txt")
_LATENCY_TOKENS = 128  # tokens per sequence of a timed pass, when --seq-len is not given


@dataclass
class EvalRequest:
    """What to evaluate on and how; ``data`` is what ``--data`` names, or (the Python API)
    a Dataset for a classifier or a tensor of token ids for a transformer."""

    data: str | Dataset | torch.Tensor | None = None
    metric: str | None = None
    reference: str | None = None
    latency: bool = False
    batch_size: int | None = None
    repeats: int = DEFAULT_REPEATS
    seq_len: int | None = None
    device: str = "cpu"
    input_shape: tuple[int, ...] | None = None
    trust_remote_code: bool = False
    # (done, total) over a long measurement (perplexity's windows); the CLI's progress bar
    progress: Callable[[int, int], None] | None = field(default=None, repr=False, compare=False)

    @property
    def data_name(self) -> str:
        """The data as the figures' protocols name it."""
        if isinstance(self.data, torch.Tensor):
            return "token ids"
        return self.data.name if isinstance(self.data, Dataset) else str(self.data)


def check_request(request: EvalRequest) -> None:
    """Refuse, before anything is loaded, a request that cannot run."""
    if request.metric is not None and request.metric not in METRICS:
        raise BadInput(f"--metric {request.metric!r} is not known", f"use {', '.join(METRICS)}")
    if request.metric == "similarity" and request.reference is None:
        raise BadInput("--metric similarity compares with a reference: pass --reference DENSE")
    if request.data is None and (request.metric or not request.latency):
        raise BadInput(
            "eval needs data to evaluate on: pass --data",
            "labelled data (digits, mnist1d, x/y .npz) for a classifier; text (.txt, .jsonl) "
            "or token ids for a transformer; or only --latency",
        )
    if request.repeats < 1:
        raise BadInput(f"--repeats must be at least 1 (got {request.repeats})")
    if request.seq_len is not None and request.seq_len < 1:
        raise BadInput(f"--seq-len must be at least 1 (got {request.seq_len})")
    if request.reference is not None and request.metric in ("accuracy", "perplexity"):
        raise BadInput(
            f"--reference compares outputs, which --metric {request.metric} does not",
            f"drop --reference, or --metric {request.metric} to compare with the reference",
        )


def model_kind(model: LoadedModel) -> str:
    """``classifier`` (a module on samples), ``causal-lm`` or ``encoder`` (token models)."""
    if model.hf_config is None:
        return "classifier"
    name = type(model.module).__name__
    return "causal-lm" if name.endswith(_CAUSAL_SUFFIXES) else "encoder"


def choose_metric(kind: str, request: EvalRequest) -> str | None:
    """The quality metric to compute: ``--metric``, else the one that fits the model."""
    metric = request.metric
    if metric is None:
        if request.data is None:
            return None  # --latency only (with --reference: both timed)
        if request.reference is not None:
            return "similarity"
        metric = {"classifier": "accuracy", "causal-lm": "perplexity"}.get(kind)
        if metric is None:
            raise Unsupported(
                "an encoder has no quality metric of its own",
                "pass --reference DENSE to compare its outputs with the dense model's",
            )
    fits = {"accuracy": ("classifier",), "perplexity": ("causal-lm",)}
    if metric in fits and kind not in fits[metric]:
        what = "a causal language model" if metric == "perplexity" else "a classifier"
        raise Unsupported(
            f"--metric {metric} needs {what}; this model is a {kind.replace('-', ' ')}",
            "use --metric similarity with --reference DENSE"
            if kind == "encoder"
            else f"use --metric {'accuracy' if kind == 'classifier' else 'perplexity'}",
        )
    return metric


def evaluate_model(
    model: LoadedModel, names: list[str], request: EvalRequest, reference: LoadedModel | None
) -> Report:
    """The report of ``model`` with its ``quality`` block and cost."""
    started = time.perf_counter()
    require_runnable(model, "eval")
    kind = model_kind(model)
    metric = choose_metric(kind, request)
    if kind == "classifier" and request.seq_len is not None:
        raise BadInput(
            f"--seq-len sets the token windows of a transformer; {model.source} is a classifier",
            "drop --seq-len (--input-shape sets a classifier's input)",
        )
    if reference is not None:
        check_same_architecture(model, reference, kind)
    shape = request.input_shape or _declared_shape(model)
    report = build_report("eval", model, names, input_shape=shape, topology=False)
    add_cost(report, model, shape, trust_remote_code=request.trust_remote_code)
    for runnable in (model, reference):  # an ONNX model runs in onnxruntime from here on
        if runnable is not None and runnable.format == "onnx":
            _attach_onnx_runtime(runnable, request)
    entries: list[dict[str, Any]] = []
    if metric in ("accuracy", "perplexity"):
        entries += measure_quality(model, request, metric)
    elif metric == "similarity":
        entries += _similarity(model, reference, kind, request)
    if request.latency:
        entries.append(_latency(model, kind, request, shape, reference))
    report.quality = {entry["metric"]: entry for entry in entries}
    report.seconds = time.perf_counter() - started
    return report


def require_runnable(model: LoadedModel, what: str) -> None:
    """Refuse a model eval cannot run: one without a PyTorch graph, unless it is ONNX (run by
    onnxruntime, which must then be installed)."""
    if model.format == "onnx":
        from prunecli.io.onnx import require

        require("onnxruntime")
        return
    model.require_graph(what)


def _attach_onnx_runtime(model: LoadedModel, request: EvalRequest) -> None:
    from prunecli.evaluation.onnx_runtime import OnnxRuntimeModule

    if request.device != "cpu":
        raise BadInput(
            f"--device {request.device}: an ONNX model ({model.source}) is run by onnxruntime on "
            "the CPU here",
            "drop --device",
        )
    model.module = OnnxRuntimeModule(model.source, model.onnx)


def _declared_shape(model: LoadedModel) -> tuple[int, ...] | None:
    """One sample's input shape as the model declares it: its architecture's, or an ONNX
    graph's input without the batch (when every dimension is fixed)."""
    if model.arch is not None:
        return model.arch.input_shape
    if model.format == "onnx":
        from prunecli.io.onnx import graph_values

        (first, *_) = graph_values(model.onnx)["inputs"] or [{"shape": []}]
        dims = first["shape"][1:]
        if dims and all(type(d) is int and d > 0 for d in dims):
            return tuple(dims)
    return None


def measure_quality(
    model: LoadedModel, request: EvalRequest, metric: str | None = None
) -> list[dict[str, Any]]:
    """The accuracy and cross-entropy of a classifier, or the perplexity of a causal LM, on
    ``request.data`` (``metric``: the one :func:`choose_metric` picks when not given)."""
    module = model.require_graph("eval")
    metric = metric or choose_metric(model_kind(model), request)
    if metric == "accuracy":
        data = _labelled(model, request)
        return classifier_quality(module, data, request.batch_size, request.device)
    windows = token_windows(model, request)
    return [
        perplexity(
            module,
            windows,
            request.data_name,
            request.batch_size,
            request.device,
            request.progress,
        )
    ]


def _labelled(model: LoadedModel, request: EvalRequest) -> Any:
    from prunecli.data.labelled import check_fits
    from prunecli.data.sources import load_data

    if isinstance(request.data, torch.Tensor):
        raise BadInput(
            "data= as a tensor is token ids, for a transformer; a classifier is evaluated on "
            "labelled data",
            "pass (x, y), (x, y, x_test, y_test), a Dataset or a data set's name",
        )
    data = request.data
    dataset = data if isinstance(data, Dataset) else load_data(str(data))
    shape = model.arch.input_shape if model.arch else None
    check_fits(dataset, model.module, shape, request.batch_size)
    return dataset


def token_windows(model: LoadedModel, request: EvalRequest) -> torch.Tensor:
    """Non-overlapping windows of ``--seq-len`` tokens of the ``--data`` text or ids."""
    from prunecli.calibration.data import (
        TEXT_SUFFIXES,
        check_data,
        check_sizes,
        check_vocabulary,
        max_positions,
        token_stream,
    )

    config = model.hf_config or {}
    seq_len = check_sizes(1, request.seq_len, max_positions(config))
    if isinstance(request.data, torch.Tensor):  # token ids from the Python API
        stream = _token_ids(request.data)
    elif isinstance(request.data, Dataset):
        raise BadInput(
            f"a transformer reads text or token ids, not labelled data ({request.data.name})",
            "pass a .txt or .jsonl file, token ids (.npz, .safetensors), or a tensor of them",
        )
    elif model.format == "module" and Path(str(request.data)).suffix.lower() in TEXT_SUFFIXES:
        raise BadInput(
            f"data={request.data!r} is text, and a model in memory has no tokenizer files",
            "pass its token ids (a tensor or .npz), or evaluate the saved folder",
        )
    else:
        folder, data = Path(model.source), str(request.data)
        check_data(data, folder)
        stream = token_stream(data, folder, request.trust_remote_code)
    check_vocabulary(stream, config, request.data_name)
    return split_windows(stream, seq_len, request.data_name)


def _token_ids(ids: torch.Tensor) -> torch.Tensor:
    """A tensor of token ids (any shape) as one stream, in order."""
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise BadInput(
            f"data= as a tensor holds token ids, integers; got {ids.dtype}",
            "pass e.g. tokenizer(text, return_tensors='pt').input_ids",
        )
    return ids.detach().reshape(-1).to("cpu", torch.int64)


def _similarity(
    model: LoadedModel, reference: LoadedModel | None, kind: str, request: EvalRequest
) -> list[dict[str, Any]]:
    assert reference is not None and reference.module is not None
    if kind == "classifier":
        from prunecli.data.labelled import check_fits

        dataset = _labelled(model, request)
        shape = reference.arch.input_shape if reference.arch else None
        try:
            check_fits(dataset, reference.module, shape, request.batch_size, check_labels=False)
        except BadInput as error:
            raise BadInput(f"--reference {reference.source}: {error.message}", error.hint) from None
        inputs = eval_split(dataset)[0]
        batch = request.batch_size or DEFAULT_BATCH_SIZE
    else:
        inputs = token_windows(model, request)
        batch = request.batch_size or DEFAULT_LM_BATCH
    cosine, agreement = similarity(
        model.module, reference.module, inputs, module_outputs(kind), batch, request.device
    )
    return similarity_entries(
        cosine, agreement, len(inputs), request.data_name, reference.source, kind
    )


def _latency(
    model: LoadedModel,
    kind: str,
    request: EvalRequest,
    shape: tuple[int, ...] | None,
    reference: LoadedModel | None = None,
) -> dict[str, Any]:
    """The latency entry of ``model``; with ``reference``, both timed side by side and the
    speed-up."""
    batch = request.batch_size or 1
    generator = torch.Generator().manual_seed(0)
    call = None
    if kind == "classifier":
        if shape is None:
            raise BadInput(
                "--latency needs the model's input shape", "pass --input-shape, e.g. 3,32,32"
            )
        example = torch.randn((batch, *shape), generator=generator)
    else:
        from prunecli.calibration.data import check_sizes, max_positions, vocab_size

        config = model.hf_config or {}
        positions = max_positions(config)
        length = request.seq_len or min(_LATENCY_TOKENS, positions or _LATENCY_TOKENS)
        check_sizes(1, length, positions)  # no longer than the model's positions
        vocab = vocab_size(config) or 2
        example = torch.randint(0, vocab, (batch, length), generator=generator)
        call = lm_logits if kind == "causal-lm" else _encoder_call
    runtime = "onnxruntime" if model.format == "onnx" else "torch"
    if reference is None:
        times = time_forward(model.module, example, request.repeats, request.device, call)
        return latency_entry(times, batch, request.device, list(example.shape), runtime)
    assert model.module is not None and reference.module is not None
    times, theirs = time_pair(
        model.module, reference.module, example, request.repeats, request.device, call
    )
    entry = latency_entry(times, batch, request.device, list(example.shape), runtime)
    return with_reference(entry, theirs, reference.source)


def _encoder_call(module: Any, ids: torch.Tensor) -> Any:
    return module.forward(input_ids=ids)  # past the hooks of models/hf.py, as lm_logits


def check_same_architecture(model: LoadedModel, reference: LoadedModel, kind: str) -> None:
    """Refuse a reference of another architecture or tokenizer: its outputs mean other things."""
    if (model.hf_config is None) != (reference.hf_config is None):
        raise BadInput(
            f"--reference {reference.source} is not the same kind of model as {model.source}"
        )
    if kind == "classifier":
        ours = model.arch.name if model.arch else None
        theirs = reference.arch.name if reference.arch else None
        if ours != theirs and "onnx" not in (model.format, reference.format):  # ONNX: by outputs
            raise BadInput(
                f"--reference {reference.source} is a {theirs}, not a {ours} like {model.source}",
                "compare a pruned model with the dense model it came from",
            )
        return
    for key in ("model_type", "hidden_size", "vocab_size"):
        ours, theirs = (model.hf_config or {}).get(key), (reference.hf_config or {}).get(key)
        if ours != theirs:
            raise BadInput(
                f"--reference {reference.source} has {key} {theirs}, not {ours} like {model.source}",
                "compare a pruned model with the dense model it came from",
            )
    for name in _TOKENIZER_FILES:
        ours_file, theirs_file = Path(model.source) / name, Path(reference.source) / name
        if ours_file.is_file() != theirs_file.is_file() or (
            ours_file.is_file() and ours_file.read_bytes() != theirs_file.read_bytes()
        ):
            raise BadInput(
                f"--reference {reference.source} has another tokenizer than {model.source} "
                f"({name} differs)",
                "compare models that share one tokenizer",
            )
