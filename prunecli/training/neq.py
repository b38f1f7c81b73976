"""NEq, neurons at equilibrium (Bragagnolo et al. 2022; reference EIDOSLAB/NEq).

After every epoch each neuron (an output row of a Linear layer, an output channel of a Conv
layer) is run on a fixed slice of the training data. Its change since the previous epoch is
φ_t = 1 − cos(y_t, y_{t−1}), the cosine taken over the neuron's outputs on the whole slice (for
a Linear neuron that is one value per sample, so a per-sample cosine would be degenerate); its
velocity is v_t = Δφ_t − μ·v_{t−1}. A neuron with |v_t| < ε is frozen for the next epoch: its
weights, bias and optimizer state do not change, and its weight gradient is zeroed, which is
the backward work NEq saves (reported as the fraction of weight-gradient entries skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from prunecli.data.labelled import set_mode
from prunecli.training.hooks import TrainHook, TrainState

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class _Layer:
    name: str  # the module's name; its parameters are name.weight, name.bias
    module: nn.Module
    previous: torch.Tensor | None = None  # outputs on the slice, (neurons, samples × positions)
    phi: torch.Tensor | None = None
    velocity: torch.Tensor | None = None
    frozen: torch.Tensor | None = None  # bool per neuron, for the epoch in progress
    saved: dict[str, torch.Tensor] = field(default_factory=dict)


class NeqHook(TrainHook):
    def __init__(self, eps: float = 1e-3, mu: float = 0.5, samples: int = 256) -> None:
        if not eps >= 0:
            from prunecli.errors import BadInput

            raise BadInput(f"--neq-eps must be 0 or more, got {eps}")
        self.eps, self.mu, self.samples = eps, mu, samples
        self.layers: list[_Layer] = []
        self.slice: torch.Tensor | None = None
        self.skipped_steps = 0.0  # Σ over steps of the fraction of weight-gradient entries skipped
        self.steps = 0

    def on_start(self, state: TrainState) -> None:
        self.layers = [
            _Layer(name, module)
            for name, module in state.module.named_modules()
            if isinstance(module, _LAYERS) and f"{name}.weight" in state.params
        ]
        generator = torch.Generator().manual_seed(state.settings.seed)
        rows = torch.randperm(len(state.data), generator=generator)[: self.samples]
        self.slice = state.data.x[rows].to(next(state.module.parameters()).device)
        for layer, outputs in zip(self.layers, self._outputs(state.module), strict=True):
            layer.previous = outputs

    def after_backward(self, state: TrainState) -> None:
        for layer in self._frozen_layers():
            for param in self._params(layer):
                if param.grad is not None:
                    param.grad[layer.frozen] = 0

    def on_step_end(self, state: TrainState) -> None:
        self.steps += 1
        self.skipped_steps += self._skipped_fraction()
        with torch.no_grad():
            for layer in self._frozen_layers():
                for key, value in layer.saved.items():
                    target = self._find(state, layer, key)
                    target[layer.frozen] = value

    def on_epoch_end(self, state: TrainState) -> None:
        outputs = self._outputs(state.module)
        for layer, current in zip(self.layers, outputs, strict=True):
            cosine = nn.functional.cosine_similarity(current, layer.previous, dim=1, eps=1e-12)
            phi = 1 - cosine
            if layer.phi is not None:
                change = phi - layer.phi
                velocity = change if layer.velocity is None else change - self.mu * layer.velocity
                layer.velocity = velocity
                layer.frozen = velocity.abs() < self.eps
            layer.phi, layer.previous = phi, current
        self._save_frozen(state)
        neurons = sum(len(layer.phi) for layer in self.layers)
        frozen = sum(int(layer.frozen.sum()) for layer in self._frozen_layers())
        state.record["neq_frozen"] = frozen / neurons if neurons else 0.0
        state.record["neq_skipped"] = self._skipped_fraction()

    key = "neq"

    def summary(self) -> dict[str, float]:
        return {"eps": self.eps, "mu": self.mu, "backward_saved": self.backward_saved}

    @property
    def backward_saved(self) -> float:
        """Mean over the steps so far of the fraction of weight-gradient entries skipped."""
        return self.skipped_steps / self.steps if self.steps else 0.0

    # --- internals ------------------------------------------------------------------------

    def _frozen_layers(self) -> list[_Layer]:
        return [layer for layer in self.layers if layer.frozen is not None and layer.frozen.any()]

    def _params(self, layer: _Layer) -> list[torch.Tensor]:
        return [
            p for p in (layer.module.weight, getattr(layer.module, "bias", None)) if p is not None
        ]

    def _find(self, state: TrainState, layer: _Layer, key: str) -> torch.Tensor:
        kind, _, slot = key.partition(":")
        param = getattr(layer.module, kind)
        return param.data if not slot else state.optimizer.state[param][slot]

    def _save_frozen(self, state: TrainState) -> None:
        """What the frozen neurons hold now: parameters and per-entry optimizer buffers."""
        for layer in self.layers:
            layer.saved = {}
            if layer.frozen is None or not layer.frozen.any():
                continue
            for kind in ("weight", "bias"):
                param = getattr(layer.module, kind, None)
                if param is None:
                    continue
                layer.saved[kind] = param.data[layer.frozen].clone()
                for slot, buffer in state.optimizer.state.get(param, {}).items():
                    if isinstance(buffer, torch.Tensor) and buffer.shape == param.shape:
                        layer.saved[f"{kind}:{slot}"] = buffer[layer.frozen].clone()

    def _skipped_fraction(self) -> float:
        total = sum(layer.module.weight.numel() for layer in self.layers)
        skipped = sum(
            int(layer.frozen.sum()) * layer.module.weight[0].numel()
            for layer in self._frozen_layers()
        )
        return skipped / total if total else 0.0

    def _outputs(self, module: nn.Module) -> list[torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        handles = [
            layer.module.register_forward_hook(
                lambda _m, _i, out, name=layer.name: captured.__setitem__(name, out.detach())
            )
            for layer in self.layers
        ]
        was_training = module.training
        set_mode(module, False)
        try:
            with torch.no_grad():
                module(self.slice)
        finally:
            for handle in handles:
                handle.remove()
            set_mode(module, was_training)
        return [
            captured[layer.name].transpose(0, 1).reshape(captured[layer.name].shape[1], -1)
            for layer in self.layers
        ]
