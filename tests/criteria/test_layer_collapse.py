"""Layer collapse, the SynFlow paper's headline property (Tanaka et al. 2020, Fig. 1/3).

On the zoo's vgg16 at sparsity 0.99999 (147 of 14.7M weights kept), SynFlow's iterative,
data-free conservation keeps every layer connected, while global magnitude and SNIP at
initialization remove whole layers. The collapse is read from the topology of the pruned model.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from prunecli.criteria import get_criterion
from prunecli.data.labelled import from_arrays
from prunecli.io import safetensors as st
from prunecli.models.loaded import META_ARCH, META_ARCH_KWARGS, LoadedModel, load_model
from prunecli.models.zoo import build_arch
from prunecli.pruning.criterion import Inputs
from prunecli.pruning.loop import prune_model
from prunecli.pruning.prunable import select_prunable
from prunecli.topology.metrics import model_topology

SPARSITY = 0.99999


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    tensors = dict(build_arch("vgg16").module.state_dict())
    path = tmp_path_factory.mktemp("collapse") / "vgg16.safetensors"
    buffer = io.BytesIO()
    st.write(buffer, tensors, {META_ARCH: "vgg16", META_ARCH_KWARGS: json.dumps({})})
    path.write_bytes(buffer.getvalue())
    return path


def pruned(path: Path, method: str, inputs: Inputs | None = None) -> tuple[LoadedModel, list[str]]:
    model = load_model(str(path))
    names = select_prunable(model)
    prune_model(model, names, get_criterion(method)(), SPARSITY, inputs=inputs)
    kept = sum(int(model.tensors[name].count_nonzero()) for name in names)
    total = sum(model.tensors[name].numel() for name in names)
    assert kept == total - round(SPARSITY * total)  # exactly 147 weights kept
    return model, names


def collapsed(model: LoadedModel, names: list[str]) -> list[str]:
    topology = model_topology(model, names)
    assert topology is not None
    return topology.collapsed_layers


def test_synflow_keeps_every_layer_of_vgg16(vgg16_file: Path) -> None:
    model, names = pruned(vgg16_file, "synflow")
    assert collapsed(model, names) == []
    assert all(int(model.tensors[name].count_nonzero()) > 0 for name in names)


def test_global_magnitude_collapses_vgg16(vgg16_file: Path) -> None:
    model, names = pruned(vgg16_file, "magnitude")
    assert len(collapsed(model, names)) >= 1


def test_snip_at_init_collapses_vgg16(vgg16_file: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((32, 3, 32, 32), generator=generator)
    data = from_arrays(x, torch.arange(32) % 10, name="noise")
    inputs = Inputs((3, 32, 32), data, options={"batch_size": 32})
    model, names = pruned(vgg16_file, "snip", inputs)
    assert len(collapsed(model, names)) >= 1
