"""Path networks: a module made linear and positive, so its output on an all-ones input counts
(weighted) input→output paths (DESIGN §3 SynFlow, §4 topology).

The copy runs in float64 in eval mode with every bias zero; prunable weights are replaced
(by |θ|·mask for SynFlow, by the 0/1 mask for topology); BatchNorm becomes the identity
(topology) or its positive per-channel scale |γ|/√(var+ε) without shift (SynFlow); average
pooling becomes sum pooling. On non-negative inputs with non-negative weights ReLU is the identity,
so the network computes a sum over paths of the product of the weights along each path.
BatchNorm layers are found by their ``running_mean``/``running_var`` buffers, so the same code
serves zoo modules and the flat graphs of ``.pt2`` programs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch

from prunecli.models.loaded import copy_module

BatchNormMode = Literal["identity", "scale"]
_POOLS = (torch.nn.AvgPool1d, torch.nn.AvgPool2d, torch.nn.AvgPool3d)
_ADAPTIVE_POOLS = (
    torch.nn.AdaptiveAvgPool1d,
    torch.nn.AdaptiveAvgPool2d,
    torch.nn.AdaptiveAvgPool3d,
)


def _batchnorm_prefixes(state: Mapping[str, torch.Tensor]) -> list[str]:
    return [
        name.removesuffix(".running_mean")
        for name in state
        if name.endswith(".running_mean") and name.replace("running_mean", "running_var") in state
    ]


def _sum_pool_hook(
    module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
) -> torch.Tensor:
    """Average → sum: scale by the window area (input cells per output cell)."""
    spatial_in = math.prod(inputs[0].shape[2:]) if inputs[0].dim() > 2 else 1
    spatial_out = math.prod(output.shape[2:]) if output.dim() > 2 else 1
    if isinstance(module, _ADAPTIVE_POOLS):
        return output * (spatial_in / spatial_out)
    kernel = module.kernel_size
    area = math.prod(kernel) if isinstance(kernel, tuple) else kernel ** (output.dim() - 2)
    return output * area


class PathNetwork:
    """A float64 linear copy of ``module`` whose prunable weights are set with :meth:`set_weights`."""

    def __init__(
        self, module: torch.nn.Module, batchnorm: BatchNormMode, device: str = "cpu"
    ) -> None:
        self.module = copy_module(module).to(device=device, dtype=torch.float64).eval()
        self.device = device
        for submodule in self.module.modules():
            if isinstance(submodule, _POOLS + _ADAPTIVE_POOLS):
                submodule.register_forward_hook(_sum_pool_hook)
        self._params = dict(self.module.named_parameters())
        self._params.update(self.module.named_buffers())
        self._reduce(batchnorm)

    @torch.no_grad()
    def _reduce(self, batchnorm: BatchNormMode) -> None:
        prefixes = _batchnorm_prefixes(self._params)
        for prefix in prefixes:
            mean, var = (
                self._params[f"{prefix}.running_mean"],
                self._params[f"{prefix}.running_var"],
            )
            eps = _batchnorm_eps(self.module, prefix)
            gamma = self._params.get(f"{prefix}.weight")
            if batchnorm == "scale" and gamma is not None:
                gamma.copy_(gamma.abs() / torch.sqrt(var + eps))
            elif gamma is not None:
                gamma.fill_(1.0)
            mean.zero_()
            var.fill_(1.0 - eps)  # (x - 0) / sqrt(1 - eps + eps) = x exactly
        for name, tensor in self._params.items():
            if name.endswith("bias") and tensor.is_floating_point():
                tensor.zero_()
        self.batchnorm_prefixes = prefixes

    @torch.no_grad()
    def set_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Replace the named tensors (e.g. prunable weights by |θ|·mask or by masks)."""
        for name, value in weights.items():
            self._params[name].copy_(value.to(device=self.device, dtype=torch.float64))

    def parameter(self, name: str) -> torch.Tensor:
        return self._params[name]

    def ones(self, input_shape: tuple[int, ...]) -> torch.Tensor:
        return torch.ones((1, *input_shape), dtype=torch.float64, device=self.device)


def _batchnorm_eps(module: torch.nn.Module, prefix: str) -> float:
    try:
        layer = module.get_submodule(prefix)
    except AttributeError:
        return 1e-5  # a flat .pt2 graph: PyTorch's default
    return float(getattr(layer, "eps", 1e-5))


class _Captured(Exception):
    """Raised by a capture hook to end the forward pass once every asked-for input is in."""


def layer_inputs(
    network: PathNetwork,
    layer_names: list[str],
    input_shape: tuple[int, ...],
    stop_early: bool = False,
) -> dict[str, torch.Tensor]:
    """Per prunable layer (named by its weight, e.g. ``conv1.weight``): the path counts reaching
    each of its input channels/features, summed over positions — one forward pass on ones.

    ``stop_early`` ends the pass as soon as every named layer's input is captured (layer-by-layer
    callers such as NPB need only the part of the network before the layer)."""
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name in layer_names:
        layer = network.module.get_submodule(name.removesuffix(".weight"))

        def capture(
            _module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], name: str = name
        ) -> None:
            x = inputs[0].detach()
            captured[name] = (
                x.sum(dim=[d for d in range(x.dim()) if d != 1]) if x.dim() > 2 else x.sum(0)
            )
            if stop_early and len(captured) == len(layer_names):
                raise _Captured

        handles.append(layer.register_forward_pre_hook(capture))
    try:
        with torch.no_grad():
            network.module(network.ones(input_shape))
    except _Captured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


def call_order(
    network: PathNetwork, layer_names: list[str], input_shape: tuple[int, ...]
) -> list[str]:
    """The prunable layers (named by their weights) in the order one forward pass first calls
    them; layers the pass never calls (e.g. in a flat ``.pt2`` graph) are left out."""
    order: list[str] = []
    handles = []
    for name in layer_names:
        layer = network.module.get_submodule(name.removesuffix(".weight"))

        def record(_module: torch.nn.Module, _inputs: object, name: str = name) -> None:
            if name not in order:
                order.append(name)

        handles.append(layer.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            network.module(network.ones(input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return order
