"""The block runner: a Hugging Face folder pruned one block at a time, in memory bounded by one
block plus the calibration activations, whatever the model's size.

The model is built with its parameters on the ``meta`` device (``models.hf.build_skeleton``).
The tensors before the first block (embeddings; not the output head) are read from the shards
and the calibration windows run through them, a forward pre-hook on block 0 capturing its inputs
(hidden states and keyword arguments: attention mask, position ids, rotary tables) and stopping
the forward, as the reference codes' ``Catcher`` does. Then, block by block: read only its
tensors, run the batches through it while hooks hand each Linear's input to the pruner, let the
pruner prune, run it again so the next block sees the pruned block's outputs (as both reference
codes do), write its tensors and put it back on ``meta``. The embeddings and head are copied
through unchanged. Computation is in float32 (float64 stays float64); tensors are written back
in their stored dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from prunecli.calibration.blocks import Block, BlockPruner, Blocks, Progress, find_blocks, linears
from prunecli.calibration.memory import bound_heap, release_freed
from prunecli.calibration.shards import FolderWriter, ShardTensors, check_dense
from prunecli.errors import BadInput, Unsupported
from prunecli.io.checkpoint import Checkpoint, atomic_folder, open_checkpoint
from prunecli.models.hf import build_skeleton, is_head

DEFAULT_BATCH = 4  # calibration windows per forward: bounds the attention's activations
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_COMPUTED = (*_LOW_PRECISION, torch.float32, torch.float64)  # the weights a block runs with


class _Stop(Exception):
    """Raised by the hook on block 0 once it has the block's inputs: the rest is not run."""


@dataclass(frozen=True)
class BlockModel:
    """A Hugging Face folder opened for the runner: its checkpoint, its tensors by name, and the
    model built on ``meta`` with its blocks found."""

    checkpoint: Checkpoint
    tensors: ShardTensors
    blocks: Blocks


def open_blocks(source: str, trust_remote_code: bool = False, needs: str = "") -> BlockModel:
    """Open ``source`` and find its blocks, reading headers only; not a dense Hugging Face
    folder, or no blocks: Unsupported. ``needs`` names who asks, for the message."""
    checkpoint = open_checkpoint(source)
    if checkpoint.folder is None or checkpoint.config is None:
        raise Unsupported(
            f"{source} is not a Hugging Face folder: {needs or 'calibrated methods'} need"
            f"{'s' if needs else ''} config.json beside the safetensors, to build the model and "
            "find its blocks",
            "pass the model's folder as save_pretrained writes it",
        )
    check_dense(checkpoint)
    tensors = ShardTensors(checkpoint)
    model = build_skeleton(Path(source), tensors.shapes(), trust_remote_code)
    for name, _ in model.named_parameters():
        if name in tensors and tensors.dtype(name) not in _COMPUTED:
            raise Unsupported(
                f"{source}: {name} is stored as {str(tensors.dtype(name)).removeprefix('torch.')} "
                "(a quantized model?); the block runner computes with float16, bfloat16, "
                "float32 or float64 weights",
                "prune the model before quantizing it",
            )
    return BlockModel(checkpoint, tensors, find_blocks(model, source))


def prune_blocks(
    source: str | BlockModel,
    input_ids: torch.Tensor,
    pruner: BlockPruner,
    output: str,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    extra: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    shapes: dict[str, tuple[int, ...]] | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Prune the Hugging Face folder ``source`` (a path, or as :func:`open_blocks` opened it)
    block by block on ``input_ids`` (samples × tokens) with ``pruner``; the folder ``output`` is
    written like the input (same shards, index, companions), atomically. A pruner that shrinks
    tensors gives their new ``shapes`` and the ``config`` that describes them up front
    (calibration/shards.py ``FolderWriter``). Returns ``written`` (bytes) and ``blocks``."""
    opened = source if isinstance(source, BlockModel) else open_blocks(source, trust_remote_code)
    checkpoint, tensors, blocks = opened.checkpoint, opened.tensors, opened.blocks
    source = checkpoint.source
    runner = _Runner(blocks, tensors, torch.device(device), source)
    bound_heap()
    with atomic_folder(output) as staging:
        writer = FolderWriter(checkpoint, staging, extra or {}, shapes, config)
        try:
            states = runner.capture(input_ids, batch_size)
            for index, layer in enumerate(blocks.layers):
                states = runner.run_block(index, layer, states, pruner, writer)
                release_freed()
                if progress is not None:
                    progress(index + 1, len(blocks), blocks.name(index))
            written = writer.finish()
        finally:
            writer.close()
    return {"written": written, "blocks": len(blocks)}


class BlockSurvey(Protocol):
    """What a first pass over the dense model gives the runner (OWL's outlier ratios, for one):
    ``observe`` as :class:`BlockPruner`'s, then ``survey`` reads the block, leaving it as it is."""

    def observe(self, name: str, module: torch.nn.Module, inputs: torch.Tensor) -> None: ...

    def survey(self, block: Block) -> None: ...


def survey_blocks(
    source: BlockModel,
    input_ids: torch.Tensor,
    survey: BlockSurvey,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> None:
    """A pass over the DENSE model that writes nothing: block by block (one in memory, as
    :func:`prune_blocks`), hooks hand each linear layer's input to ``survey.observe``, then
    ``survey.survey`` reads the block, whose dense outputs feed the next block. One forward per
    block (prune_blocks runs two)."""
    runner = _Runner(source.blocks, source.tensors, torch.device(device), source.checkpoint.source)
    bound_heap()
    states = runner.capture(input_ids, batch_size)
    for index, layer in enumerate(source.blocks.layers):
        states = runner.survey_block(index, layer, states, survey)
        release_freed()
        if progress is not None:
            progress(index + 1, len(source.blocks), source.blocks.name(index))


class _Runner:
    def __init__(
        self, blocks: Blocks, tensors: ShardTensors, device: torch.device, source: str
    ) -> None:
        self.blocks, self.tensors, self.device, self.source = blocks, tensors, device, source

    def capture(self, input_ids: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, Any]]:
        """Block 0's inputs for each batch: (hidden states on the CPU, keyword arguments)."""
        model, first = self.blocks.model, self.blocks.layers[0]
        outside = [
            name
            for name, _ in model.named_parameters()
            if not name.startswith(self.blocks.prefix + ".") and not is_head(name)
        ]
        states: list[tuple[torch.Tensor, Any]] = []

        def grab(_: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            kwargs = dict(kwargs)
            hidden = args[0] if args else kwargs.pop("hidden_states")
            kwargs.update(zip(_positional_names(first)[1:], args[1:], strict=False))
            kwargs = _to(kwargs, torch.device("cpu"))
            if not bool(torch.isfinite(hidden).all()):
                raise BadInput(
                    f"{self.source}: the embeddings give NaN or infinite values on the "
                    f"calibration data (the inputs of block {self.blocks.name(0)})",
                    "check the embedding weights",
                )
            if states and _same(states[-1][1], kwargs):
                kwargs = states[-1][1]  # one copy of a mask shared by every batch
            states.append((hidden.detach().to("cpu"), kwargs))
            raise _Stop

        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "use_cache"):
            config.use_cache = False
        handle = first.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with _materialised(model, "", outside, self.tensors, self.device, embeddings=True):
                for batch in input_ids.split(batch_size):
                    try:
                        with torch.no_grad():
                            model(input_ids=batch.to(self.device))
                    except _Stop:
                        continue
                    raise Unsupported(f"{self.source}: the model never reached its first block")
        finally:
            handle.remove()
        return states

    def run_block(
        self,
        index: int,
        layer: torch.nn.Module,
        states: list[tuple[torch.Tensor, Any]],
        pruner: BlockPruner,
        writer: FolderWriter,
    ) -> list[tuple[torch.Tensor, Any]]:
        name = self.blocks.name(index)
        own = [n for n, _ in layer.named_parameters()]
        with _materialised(layer, name, own, self.tensors, self.device):
            found = linears(layer, name)
            self._observed(layer, name, found, pruner, states)
            with torch.no_grad():
                pruner.prune_block(Block(index, name, layer, found))
            outputs = self._forward(layer, name, states)
            for sub, tensor in layer.state_dict().items():
                if f"{name}.{sub}" in self.tensors:
                    writer.write(f"{name}.{sub}", tensor)
        return outputs

    def survey_block(
        self, index: int, layer: torch.nn.Module, states: list[tuple[torch.Tensor, Any]], survey
    ) -> list[tuple[torch.Tensor, Any]]:
        """Observe and survey the dense block; its outputs."""
        name = self.blocks.name(index)
        own = [n for n, _ in layer.named_parameters()]
        with _materialised(layer, name, own, self.tensors, self.device):
            found = linears(layer, name)
            outputs = self._observed(layer, name, found, survey, states)
            with torch.no_grad():
                survey.survey(Block(index, name, layer, found))
        return outputs

    def _observed(
        self,
        layer: torch.nn.Module,
        name: str,
        found: dict[str, torch.nn.Module],
        observer: BlockPruner | BlockSurvey,
        states: list[tuple[torch.Tensor, Any]],
    ) -> list[tuple[torch.Tensor, Any]]:
        """The block's outputs, each linear layer's inputs handed to ``observer.observe``."""
        hooks = [
            module.register_forward_hook(
                lambda m, args, _, n=n: observer.observe(n, m, args[0].detach())
            )
            for n, module in found.items()
        ]
        try:
            return self._forward(layer, name, states)
        finally:
            for hook in hooks:
                hook.remove()

    def _forward(
        self, layer: torch.nn.Module, name: str, states: list[tuple[torch.Tensor, Any]]
    ) -> list[tuple[torch.Tensor, Any]]:
        outputs = []
        for hidden, kwargs in states:
            with torch.no_grad():
                out = layer(hidden.to(self.device), **_to(kwargs, self.device))
            out = out[0] if isinstance(out, (tuple, list)) else out
            if not torch.isfinite(out).all():
                raise BadInput(
                    f"block {name} gives NaN or infinite activations on the calibration data",
                    "check the model's weights and the calibration text",
                )
            outputs.append((out.to("cpu"), kwargs))
        return outputs


@contextmanager
def _materialised(
    root: torch.nn.Module,
    prefix: str,
    names: list[str],
    tensors: ShardTensors,
    device: torch.device,
    embeddings: bool = False,
) -> Iterator[None]:
    """The parameters ``names`` of ``root`` (``prefix`` + name in the checkpoint) read from the
    shards onto ``device`` in float32 (float64 stays) and ``root``'s buffers moved there; all
    back on ``meta`` and the CPU at the end. With ``embeddings``, embedding tables keep their
    stored dtype and their lookups are cast up instead (a bf16 table in float32 would double)."""
    full = {n: f"{prefix}.{n}" if prefix else n for n in names}
    tables = {id(m.weight) for m in root.modules() if isinstance(m, torch.nn.Embedding)}
    hooks = []
    if embeddings:
        for module in root.modules():
            if isinstance(module, torch.nn.Embedding):
                hooks.append(module.register_forward_hook(_cast_up))
    owners = dict(root.named_modules())
    buffers = [
        (owners[n.rpartition(".")[0]], n.rpartition(".")[2]) for n, _ in root.named_buffers()
    ]
    for owner, leaf in buffers:
        owner._buffers[leaf] = owner._buffers[leaf].to(device)
    loaded: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
    try:
        for name in names:
            if full[name] not in tensors:
                continue  # a tied head: never run, never written
            owner_name, _, leaf = name.rpartition(".")
            owner = owners[owner_name]
            old = owner._parameters[leaf]
            value = tensors.read(full[name])
            if value.dtype in _LOW_PRECISION and not (embeddings and id(old) in tables):
                value = value.float()
            owner._parameters[leaf] = torch.nn.Parameter(value.to(device), requires_grad=False)
            loaded.append((owner, leaf, old))
        yield
    finally:
        for owner, leaf, old in loaded:
            owner._parameters[leaf] = old
        for owner, leaf in buffers:
            owner._buffers[leaf] = owner._buffers[leaf].to("cpu")
        for hook in hooks:
            hook.remove()


def _cast_up(_: torch.nn.Module, __: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.float() if output.dtype in _LOW_PRECISION else output


def _positional_names(module: torch.nn.Module) -> list[str]:
    import inspect

    return list(inspect.signature(module.forward).parameters)


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dtype in _LOW_PRECISION:
            value = value.float()
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and torch.equal(a, b)
        )
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return a is b or bool(a == b)
    except Exception:  # noqa: BLE001 - an object without a plain equality is not shared
        return False
