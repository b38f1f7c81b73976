"""Model resolution (DESIGN §2): --arch fit errors, trusted zoo metadata, untrusted import paths."""

from __future__ import annotations

import io
import json
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from prunecli.criteria import get_criterion
from prunecli.errors import BadInput, Unsupported
from prunecli.io import safetensors as st
from prunecli.models.loaded import META_ARCH, META_ARCH_KWARGS, load_model, parse_arch_kwargs
from prunecli.models.zoo import build_arch
from prunecli.pruning.loop import prune_model

WIDTHS = [20, 30, 10]


def mlp_tensors(widths: list[int] = WIDTHS) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        k: v.clone() for k, v in build_arch("mlp", {"widths": widths}).module.state_dict().items()
    }


def save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    buffer = io.BytesIO()
    st.write(buffer, tensors, metadata)
    path.write_bytes(buffer.getvalue())
    return path


def test_arch_shape_mismatch_names_first_tensor_and_both_shapes(tmp_path: Path) -> None:
    path = save(tmp_path / "m.safetensors", mlp_tensors(), {})
    # widths [20, 31, 10]: fc1.weight is the first tensor that differs ([30, 20] vs [31, 20])
    with pytest.raises(BadInput) as caught:
        load_model(str(path), "mlp", json.dumps({"widths": [20, 31, 10]}))
    message = str(caught.value)
    assert "'fc1.weight'" in message
    assert "[30, 20]" in message and "[31, 20]" in message
    assert "fc2" not in message
    # only the second layer differs: fc2.weight is named, not fc1
    with pytest.raises(BadInput) as caught:
        load_model(str(path), "mlp", json.dumps({"widths": [20, 30, 11]}))
    assert "'fc2.weight'" in str(caught.value)
    assert "[10, 30]" in str(caught.value) and "[11, 30]" in str(caught.value)


def test_arch_missing_and_extra_tensors_are_named(tmp_path: Path) -> None:
    tensors = mlp_tensors()
    missing = {k: v for k, v in tensors.items() if k != "fc2.bias"}
    path = save(tmp_path / "missing.safetensors", missing, {})
    with pytest.raises(BadInput, match="'fc2.bias'.*missing"):
        load_model(str(path), "mlp", json.dumps({"widths": WIDTHS}))
    extra = {**tensors, "fc3.weight": torch.ones(2, 2)}
    path = save(tmp_path / "extra.safetensors", extra, {})
    with pytest.raises(BadInput, match="'fc3.weight'"):
        load_model(str(path), "mlp", json.dumps({"widths": WIDTHS}))


def test_zoo_metadata_is_trusted_and_module_shares_the_tensors(tmp_path: Path) -> None:
    metadata = {META_ARCH: "mlp", META_ARCH_KWARGS: json.dumps({"widths": WIDTHS})}
    path = save(tmp_path / "m.safetensors", mlp_tensors(), metadata)
    model = load_model(str(path))
    assert model.module is not None and model.arch is not None
    assert model.arch.input_shape == (20,) and model.arch.num_classes == 10
    names = ["fc1.weight", "fc2.weight"]
    prune_model(model, names, get_criterion("magnitude")(), 0.9)
    # pruning the tensors prunes the module: its parameters are the same storage
    params = dict(model.module.named_parameters())
    for name in names:
        assert torch.equal(params[name].detach(), model.tensors[name])
        assert int((params[name] == 0).sum()) > 0
    x = torch.randn(4, 20)
    manual = torch.relu(x @ model.tensors["fc1.weight"].T + model.tensors["fc1.bias"])
    manual = manual @ model.tensors["fc2.weight"].T + model.tensors["fc2.bias"]
    with torch.no_grad():
        assert torch.allclose(model.module(x), manual, atol=1e-6)


@pytest.fixture
def user_arch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A user module that records being imported by writing a sentinel file."""
    name = f"user_arch_{uuid.uuid4().hex}"
    sentinel = tmp_path / "imported.txt"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            Path({str(sentinel)!r}).write_text("imported")

            from prunecli.models.zoo import build_arch

            def build():
                return build_arch("mlp", {{"widths": {WIDTHS!r}}})
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, sentinel
    sys.modules.pop(name, None)


def test_import_path_in_metadata_is_never_imported(tmp_path: Path, user_arch) -> None:
    module_name, sentinel = user_arch
    spec = f"{module_name}:build"
    path = save(tmp_path / "m.safetensors", mlp_tensors(), {META_ARCH: spec})
    model = load_model(str(path))
    assert not sentinel.exists()
    assert module_name not in sys.modules
    assert model.module is None and model.arch_hint == spec
    with pytest.raises(Unsupported) as caught:
        model.require_graph("synflow")
    assert caught.value.hint == f"pass --arch {spec} to use it"
    assert "synflow" in caught.value.message and spec in caught.value.message
    assert not sentinel.exists()
    # asked for explicitly, it is imported and fitted
    model = load_model(str(path), arch=spec)
    assert sentinel.exists()
    assert model.module is not None
    assert model.arch is not None and model.arch.input_shape == (20,)
    assert model.require_graph("synflow") is model.module


def test_weights_only_require_graph_says_how(tmp_path: Path) -> None:
    path = save(tmp_path / "m.safetensors", mlp_tensors(), {})
    model = load_model(str(path))
    assert model.module is None and model.arch_hint is None
    with pytest.raises(Unsupported) as caught:
        model.require_graph("snip")
    assert "--arch NAME" in str(caught.value) and "weights only" in str(caught.value)


def test_bad_arch_spec_messages(tmp_path: Path) -> None:
    path = save(tmp_path / "m.safetensors", mlp_tensors(), {})
    with pytest.raises(BadInput, match="cannot import --arch"):
        load_model(str(path), arch="no_such_module_xyz:build")
    with pytest.raises(BadInput, match="unknown architecture 'mpl'.*'mlp'"):
        load_model(str(path), arch="mpl")
    with pytest.raises(BadInput, match="not valid JSON"):
        load_model(str(path), arch="mlp", arch_kwargs="{widths: [1]}")
    assert parse_arch_kwargs(None) == {} and parse_arch_kwargs('{"a": 1}') == {"a": 1}
    with pytest.raises(BadInput, match="JSON object"):
        parse_arch_kwargs("[1, 2]")


def test_missing_and_folder_sources(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        load_model(str(tmp_path / "nope.safetensors"))
    with pytest.raises(BadInput, match="is a folder"):
        load_model(str(tmp_path))
