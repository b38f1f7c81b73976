"""What `export` feeds the model and which of its axes stay free (docs/export.md, "Dynamic axes").

The batch axis of the exported graph is symbolic by default, and so is the sequence axis of a
model that takes token ids. torch.export proves an axis free or fails; a model whose code fixes
an axis is then exported with that axis fixed, and the report says so (a warning), unless the
user asked for the dynamic batch explicitly (``--dynamic-batch``: exit 3). The axes written in
the report are read back from the artifact, not taken from the request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from prunecli.errors import Unsupported

BATCH, SEQ = "batch", "seq"
#: axis index -> symbolic name, for the one input
Axes = dict[int, str]
T = TypeVar("T")


@dataclass(frozen=True)
class InputSpec:
    """The model's one input without its batch axis: float samples or token ids."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    vocab: int | None = None  # token ids, drawn from [0, vocab)

    @property
    def tokens(self) -> bool:
        return self.vocab is not None

    def sample(
        self, batch: int, generator: torch.Generator, length: int | None = None
    ) -> torch.Tensor:
        """Seeded inputs of ``batch`` rows (token sequences of ``length`` when given)."""
        rest = self.shape if length is None else (length, *self.shape[1:])
        if self.vocab is not None:
            return torch.randint(0, self.vocab, (batch, *rest), generator=generator)
        return torch.randn((batch, *rest), generator=generator).to(self.dtype)


def token_vocab(module: torch.nn.Module) -> int | None:
    """The vocabulary of a model that takes token ids (Hugging Face's convention: its
    ``main_input_name`` is ``input_ids``), from its input embedding; None for other models."""
    if getattr(module, "main_input_name", None) != "input_ids":
        return None
    get = getattr(module, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    if not isinstance(embedding, torch.nn.Embedding):
        embedding = next((m for m in module.modules() if isinstance(m, torch.nn.Embedding)), None)
    if embedding is None:
        raise Unsupported(
            "the model takes token ids (main_input_name 'input_ids') but has no input embedding "
            "to draw them from",
            "give the module an nn.Embedding, or a get_input_embeddings() method",
        )
    return int(embedding.num_embeddings)


def input_spec(module: torch.nn.Module, shape: tuple[int, ...]) -> InputSpec:
    floating = (p.dtype for p in module.parameters() if p.is_floating_point())
    vocab = token_vocab(module)
    if vocab is not None and len(shape) < 1:
        raise Unsupported(
            "a model that takes token ids needs a sequence length", "pass --input-shape LENGTH"
        )
    return InputSpec(tuple(shape), next(floating, torch.float32), vocab)


def wanted_axes(spec: InputSpec, dynamic_batch: bool | None) -> list[Axes]:
    """The axis sets to try in turn: the first that exports is written. The sequence of a
    token model (length 2 or more: torch.export specialises 0 and 1) is dynamic when it can be;
    ``dynamic_batch``: None tries the batch and falls back, True requires it, False fixes it."""
    seq: Axes = {1: SEQ} if spec.tokens and spec.shape[0] >= 2 else {}
    if dynamic_batch is False:
        candidates = [seq, {}]
    else:
        candidates = [{0: BATCH, **seq}, {0: BATCH}, {}]
    unique: list[Axes] = []
    for axes in candidates:
        if axes not in unique:
            unique.append(axes)
    return unique


def example_input(spec: InputSpec, axes: Axes, seed: int) -> torch.Tensor:
    """The input traced: a free batch at 2 (torch.export specialises 0 and 1), at 3 when a free
    sequence is also 2 long (equal sizes would be taken for one symbol)."""
    batch = 1
    if BATCH in axes.values():
        batch = 3 if SEQ in axes.values() and spec.shape[0] == 2 else 2
    return spec.sample(batch, torch.Generator().manual_seed(seed + 1))


def parity_inputs(spec: InputSpec, axes: Axes, samples: int, seed: int) -> list[torch.Tensor]:
    """Seeded parity batches: batch 1 each, or sizes 1..samples when the batch is free; a free
    sequence alternates between its full length and half of it."""
    generator = torch.Generator().manual_seed(seed)
    free = set(axes.values())
    sizes = range(1, samples + 1) if BATCH in free else [1] * samples
    lengths = [spec.shape[0], spec.shape[0] // 2] if SEQ in free else [None]
    return [spec.sample(n, generator, lengths[i % len(lengths)]) for i, n in enumerate(sizes)]


def dynamic_shapes(axes: Axes) -> tuple[dict[int, Any]] | None:
    """torch.export's ``dynamic_shapes`` for the one input (None: every size fixed)."""
    if not axes:
        return None
    return ({axis: torch.export.Dim(name) for axis, name in axes.items()},)


@dataclass
class Traced:
    """What the ladder of :func:`trace_dynamic` ended with."""

    result: Any
    axes: Axes
    fallback: str | None = None  # why a wanted axis was fixed (a warning in the report)


def trace_dynamic(
    trace: Callable[[Axes], T], spec: InputSpec, dynamic_batch: bool | None
) -> Traced:
    """``trace(axes)`` for each of :func:`wanted_axes` until one succeeds. The last one's error
    is raised when none does (the model does not export at all), and at once an error that
    fixed sizes cannot avoid (an operator without ONNX translation, data-dependent control
    flow); a fixed batch after an explicit ``--dynamic-batch`` is refused, naming the first
    failure."""
    candidates = wanted_axes(spec, dynamic_batch)
    first: Exception | None = None
    for axes in candidates:
        try:
            result = trace(axes)
        except Unsupported as exc:
            if axes is candidates[-1] or getattr(exc, "shape_independent", False):
                raise  # fixed sizes would fail the same way
            first = first or exc
            continue
        if first is None:
            return Traced(result, axes)
        detail = getattr(first, "message", str(first))
        lost = [name for name in candidates[0].values() if name not in axes.values()]
        if dynamic_batch and BATCH in lost:
            raise Unsupported(
                f"the batch dimension cannot be dynamic for this model: {detail}",
                "export with --static-batch",
            )
        sizes = {BATCH: 1, SEQ: spec.shape[0] if spec.shape else 1}
        fixed = " and ".join(f"the {name} dimension at {sizes[name]}" for name in lost)
        hint = " (--static-batch skips the attempt)" if BATCH in lost else ""
        return Traced(result, axes, f"the export fixes {fixed}{hint}: {detail}")
    raise AssertionError("no candidate axes")  # pragma: no cover - candidates end with a rung


# --- reading the axes back from an artifact ---------------------------------------------------


def onnx_axes(proto: Any) -> dict[str, dict[str, str]]:
    """``{value: {axis: name}}`` for every graph input and output with a symbolic dimension."""
    found: dict[str, dict[str, str]] = {}
    initializers = {init.name for init in proto.graph.initializer}
    for value in [*proto.graph.input, *proto.graph.output]:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        free = {str(i): d.dim_param for i, d in enumerate(dims) if d.HasField("dim_param")}
        if free:
            found[value.name] = free
    return found


def program_axes(program: Any, axes: Axes) -> dict[str, dict[str, str]]:
    """The same for a torch.export program: its user inputs' and outputs' symbolic sizes, named
    by the ``Dim`` they were exported with (torch names the symbols s0, s1, …)."""
    signature = program.graph_signature
    nodes = {node.name: node for node in program.graph.nodes}
    names: dict[str, str] = {}
    found: dict[str, dict[str, str]] = {}
    for user in signature.user_inputs:
        shape = _shape(nodes.get(user))
        for axis, size in enumerate(shape):
            if not isinstance(size, int) and axis in axes:
                names[str(size)] = axes[axis]
    output = next(node for node in program.graph.nodes if node.op == "output")
    results = list(output.args[0])[-len(signature.user_outputs) :]
    values: list[tuple[str, Any]] = [(u, nodes.get(u)) for u in signature.user_inputs]
    values += list(zip(signature.user_outputs, results, strict=True))
    for name, node in values:
        free = {
            str(axis): names.get(str(size), str(size))
            for axis, size in enumerate(_shape(node))
            if not isinstance(size, int)
        }
        if free:
            found[str(name)] = free
    return found


def _shape(node: Any) -> Sequence[Any]:
    value = node.meta.get("val") if node is not None and hasattr(node, "meta") else None
    return tuple(value.shape) if isinstance(value, torch.Tensor) else ()
