"""MACs by formula during one real forward pass: the fast route of structure/cost.py.

``FlopCounterMode`` (the meta route) is a ``TorchDispatchMode``: entering one, like the first
operation on the meta device, imports ``torch._dynamo``, two seconds of every ``inspect``. A
``TorchFunctionMode`` does not. It sees the torch functions a forward pass calls from Python
(``F.linear``, ``torch.conv2d``, ``@``, ``F.relu``…; the outermost call only: what a function
calls inside it is not seen), so the MACs of those that multiply are counted from their
arguments' shapes, before they run, by the formulas ``FlopCounterMode`` applies to the aten
operations they become (tests/structure/test_macs_fast.py holds the two routes equal).

The count is exact only if it sees every product, so it is a whitelist: a function that is
neither counted here nor known to multiply nothing (element-wise, shapes, normalisation,
pooling, activations, dropout, embeddings) ends the pass with :class:`Unseen`, and so does a
module whose forward it cannot see into (TorchScript) or that is known to call such functions
(RNNs, ``MultiheadAttention``, Transformer layers, ``Bilinear``); the caller then counts on the
meta route.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

Formula = Callable[[tuple[Any, ...], dict[str, Any]], int]


class Unseen(Exception):
    """The fast route cannot count this module; the message says why (one line)."""


def count_by_formula(module: nn.Module, example: torch.Tensor, max_macs: int) -> int:
    """MACs of ``module`` on zeros of ``example``'s shape and dtype (``example`` may be on
    meta): one forward pass, in eval mode, without gradients; the module's modes and buffers
    are as they were afterwards. :class:`Unseen` when the pass could not count every product
    or would do more than ``max_macs``."""
    opaque = next((layer for layer in module.modules() if isinstance(layer, _OPAQUE)), None)
    if opaque is not None:
        raise Unseen(f"{type(opaque).__name__} is not counted by formula")
    tensors = [*module.parameters(), *module.buffers()]
    if any(t.is_meta for t in tensors):
        raise Unseen("the module has no values (meta)")
    device = tensors[0].device if tensors else torch.device("cpu")
    zeros = torch.zeros(example.shape, dtype=example.dtype, device=device)
    modes = {layer: layer.training for layer in module.modules()}
    buffers = [
        (layer, name, buffer, buffer.clone())
        for layer in module.modules()
        for name, buffer in layer._buffers.items()
        if buffer is not None
    ]
    counter = _Counter(max_macs)
    for layer in modes:  # as .eval(), which a torch.export program's module refuses
        layer.training = False
    try:
        with torch.no_grad(), counter:
            module(zeros)
    except Exception as exc:  # noqa: BLE001 - the module's own error: the meta route says it
        raise Unseen(counter.stopped or _one_line(exc)) from None
    finally:
        with torch.no_grad():
            for layer, name, buffer, value in buffers:
                layer._buffers[name] = buffer
                if buffer.shape == value.shape:
                    buffer.copy_(value)
        for layer, training in modes.items():
            layer.training = training
    if counter.stopped:  # the forward caught the stop itself
        raise Unseen(counter.stopped)
    return counter.macs


class _Stop(Exception):
    pass


class _Counter(TorchFunctionMode):
    def __init__(self, max_macs: int) -> None:
        super().__init__()
        self.macs, self.max_macs, self.stopped = 0, max_macs, ""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        try:
            formula = _FORMULAS.get(func)
            if formula is not None:
                self.macs += _apply(formula, func, args, kwargs)
                if self.macs > self.max_macs:
                    raise _Stop(f"more than {self.max_macs:,} MACs to run")
            elif func not in _FREE:
                raise _Stop(f"{_name(func)} is not counted by formula")
        except _Stop as stop:  # recorded: a forward that catches it does not hide it
            self.stopped = self.stopped or str(stop)
            raise
        return func(*args, **kwargs)


def _apply(formula: Formula, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    try:
        return formula(args, kwargs)
    except _Stop:
        raise
    except Exception as exc:  # noqa: BLE001 - arguments it cannot read: the meta route can
        raise _Stop(f"{_name(func)}: {_one_line(exc)}") from None


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, *names: str, default: Any = None) -> Any:  # fmt: skip
    if i < len(args):
        return args[i]
    return next((kwargs[name] for name in names if name in kwargs), default)


def _ints(value: Any, n: int) -> list[int]:
    values = [value] * n if isinstance(value, int) else list(value)
    return values * n if len(values) == 1 else values


def _conv(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """``conv{1,2,3}d(input, weight, bias, stride, padding, dilation, groups)``: each output
    value takes ``in/groups · kernel`` MACs (weight ``[out, in/groups, *kernel]``)."""
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    n = w.dim() - 2
    kernel = list(w.shape[2:])
    stride = _ints(_arg(args, kwargs, 3, "stride", default=1), n)
    padding = _arg(args, kwargs, 4, "padding", default=0)
    dilation = _ints(_arg(args, kwargs, 5, "dilation", default=1), n)
    sides = list(x.shape[-n:])
    if padding == "same":
        out = sides
    else:
        pads = _ints(0 if padding == "valid" else padding, n)
        out = [
            (side + 2 * p - d * (k - 1) - 1) // s + 1
            for side, p, d, k, s in zip(sides, pads, dilation, kernel, stride, strict=True)
        ]
    batch = x.shape[0] if x.dim() == n + 2 else 1
    return batch * w.shape[0] * math.prod(out) * w.shape[1] * math.prod(kernel)


def _conv_transpose(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """``conv_transpose{1,2,3}d``: each input value is spread over ``out/groups · kernel``
    outputs (weight ``[in, out/groups, *kernel]``)."""
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    return x.numel() * w.shape[1] * math.prod(w.shape[2:])


def _linear(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    if w.dim() != 2:
        raise _Stop("a linear layer with a 1-d weight")
    return x.numel() * w.shape[0]  # x[..., in] · w[out, in]ᵀ


def _products(a: torch.Tensor, b: torch.Tensor) -> int:
    """``a @ b`` of matrices (batched, broadcast); a vector operand becomes an unweighted
    ``mv``/``dot``, not counted on the meta route: left to it."""
    if a.dim() < 2 or b.dim() < 2:
        raise _Stop("a matrix-vector product")
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return math.prod(batch) * a.shape[-2] * a.shape[-1] * b.shape[-1]


def _matmul(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    return _products(_arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "other", "mat2"))


def _rmatmul(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    return _products(_arg(args, kwargs, 1, "other"), args[0])


def _added(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """``addmm``/``baddbmm(input, m1, m2)``: ``input + m1 @ m2``."""
    return _products(
        _arg(args, kwargs, 1, "mat1", "batch1"), _arg(args, kwargs, 2, "mat2", "batch2")
    )


def _attention(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """``scaled_dot_product_attention(q, k, v)``: Q·Kᵀ and A·V for every query head (grouped
    key/value heads too), whatever the mask or causality."""
    q, k, v = (_arg(args, kwargs, i, name) for i, name in enumerate(("query", "key", "value")))
    same = q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
    grouped = (
        bool(_arg(args, kwargs, 7, "enable_gqa", default=False))
        and q.dim() == k.dim() == v.dim() >= 3
        and q.shape[:-3] == k.shape[:-3] == v.shape[:-3]
        and k.shape[-3] == v.shape[-3] > 0
        and q.shape[-3] % k.shape[-3] == 0
    )
    if not (same or grouped):
        raise _Stop("attention over broadcast batches")
    keys = k.shape[-2]
    return math.prod(q.shape[:-1]) * keys * (q.shape[-1] + v.shape[-1])


def _formulas() -> dict[Any, Formula]:
    table: dict[Any, Formula] = {torch._C._nn.linear: _linear, F.linear: _linear}
    for n in (1, 2, 3):
        table[getattr(torch, f"conv{n}d")] = _conv
        table[getattr(torch, f"conv_transpose{n}d")] = _conv_transpose
    tensor = torch.Tensor
    for func in (torch.matmul, tensor.matmul, tensor.__matmul__, torch.mm, tensor.mm):
        table[func] = _matmul
    for func in (torch.bmm, tensor.bmm):
        table[func] = _matmul
    table[tensor.__rmatmul__] = _rmatmul
    # not the in-place addmm_/baddbmm_: FlopCounterMode counts none of their products
    for func in (torch.addmm, tensor.addmm, torch.baddbmm, tensor.baddbmm):
        table[func] = _added
    table[F.scaled_dot_product_attention] = _attention
    return table


# Functions that do no product: what CNNs, MLPs and attention blocks call besides the above.
_FREE_NAMES = """
shape size dim ndim numel nelement dtype device layout is_cuda is_meta is_floating_point
is_complex is_contiguous requires_grad data grad is_leaf T mT stride storage_offset
element_size __len__ __iter__ __bool__ __float__ __int__ __index__ __format__ __repr__ item
tolist to type type_as float double half bfloat16 long int bool cpu detach clone contiguous
new_zeros new_ones new_empty new_full new_tensor zeros ones empty full arange zeros_like
ones_like empty_like full_like tensor as_tensor view view_as reshape reshape_as flatten
unflatten squeeze unsqueeze permute transpose t expand expand_as repeat repeat_interleave
tile narrow select index_select gather scatter masked_fill masked_fill_ where chunk split
tensor_split unbind cat concat stack flip roll movedim swapaxes __getitem__ __setitem__
fill_ zero_ copy_ triu tril diagonal
add sub mul div true_divide floor_divide remainder neg abs pow sqrt rsqrt exp log sin cos
tanh sigmoid clamp clamp_min clamp_max clip maximum minimum sign round floor ceil reciprocal
square erf eq ne lt le gt ge isfinite isnan isinf nan_to_num logical_and logical_or
logical_not add_ sub_ mul_ div_ clamp_ relu_ sigmoid_ tanh_ neg_
__add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ __truediv__
__rtruediv__ __itruediv__ __floordiv__ __neg__ __abs__ __pow__ __eq__ __ne__ __lt__ __le__
__gt__ __ge__ __and__ __or__ __invert__
sum mean max min amax amin argmax argmin prod std var norm logsumexp cumsum all any topk
sort argsort
relu relu6 leaky_relu gelu silu mish elu selu celu hardsigmoid hardswish hardtanh softplus
softsign logsigmoid glu prelu threshold softmax softmin log_softmax dropout dropout1d
dropout2d dropout3d alpha_dropout feature_alpha_dropout batch_norm instance_norm layer_norm
group_norm rms_norm normalize max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d
avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d
adaptive_max_pool2d adaptive_max_pool3d pad interpolate pixel_shuffle pixel_unshuffle
embedding one_hot
""".split()


def _free() -> set[Any]:
    found: set[Any] = set()
    for name in _FREE_NAMES:
        for space in (torch, F, torch._C._nn, torch.Tensor):
            func = getattr(space, name, None)
            if func is None or isinstance(func, type) or not (callable(func) or _is_property(func)):
                continue  # torch.float is a dtype, torch.device a class: never called here
            getter = getattr(func, "__get__", None) if _is_property(func) else None
            found.add(getter if getter is not None else func)
    return found


def _is_property(func: Any) -> bool:
    return type(func).__name__ in ("getset_descriptor", "property")


def _name(func: Any) -> str:
    owner = getattr(func, "__self__", None)  # a property's getter: name the property
    if type(owner).__name__ == "getset_descriptor":
        return f"Tensor.{owner.__name__}"
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_FORMULAS = _formulas()
_FREE = _free()
_OPAQUE: tuple[type, ...] = (
    torch.jit.ScriptModule,  # its forward runs in TorchScript: no torch function is seen
    nn.RNNBase,
    nn.RNNCellBase,
    nn.MultiheadAttention,
    nn.Transformer,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.Bilinear,
)
