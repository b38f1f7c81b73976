"""`prunecli eval MODEL.onnx`: the exported artifact measured in onnxruntime — accuracy against
onnxruntime run directly and against the PyTorch model it came from, latency, similarity; the
refusals."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import report_of, run_refused, write_zoo

from prunecli.data.sources import load_data

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits MLP pruned to 80% (``mlp.safetensors``) and its ONNX export (``mlp.onnx``)."""
    from typer.testing import CliRunner

    from prunecli.cli.app import app

    folder = tmp_path_factory.mktemp("onnx")
    dense = write_zoo(folder / "dense.safetensors", "mlp", {"widths": [64, 16, 10]})
    runner = CliRunner()
    pruned, onnx = folder / "mlp.safetensors", folder / "mlp.onnx"
    for args in (
        ("prune", dense, "--method", "magnitude", "--sparsity", "0.8", "-o", pruned),
        ("export", pruned, "--to", "onnx", "-o", onnx),
    ):
        result = runner.invoke(app, [str(a) for a in (*args, "-q")], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def here(exported: Path, workdir: Path) -> Path:
    for name in ("mlp.safetensors", "mlp.onnx"):
        shutil.copy(exported / name, workdir / name)
    return workdir


def quality(cli, *args: object) -> dict:  # noqa: ANN001
    return report_of(cli("eval", *args, "--json"))["quality"]


def test_accuracy_is_onnxruntimes_and_the_pytorch_models(cli, here: Path) -> None:
    import onnxruntime

    found = quality(cli, "mlp.onnx", "--data", "digits")
    data = load_data("digits")
    session = onnxruntime.InferenceSession("mlp.onnx", providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = torch.from_numpy(session.run(None, {name: data.x_test.numpy()})[0])
    accuracy = float((logits.argmax(1) == data.y_test).double().mean())
    assert found["accuracy"]["value"] == pytest.approx(accuracy, abs=1e-12)
    loss = float(F.cross_entropy(logits, data.y_test))
    assert found["cross_entropy"]["value"] == pytest.approx(loss, rel=1e-5)
    torch_figures = quality(cli, "mlp.safetensors", "--data", "digits")
    assert found["accuracy"]["value"] == torch_figures["accuracy"]["value"]
    assert found["cross_entropy"]["value"] == pytest.approx(
        torch_figures["cross_entropy"]["value"], rel=1e-5
    )


def test_latency_and_similarity_run_in_onnxruntime(cli, here: Path) -> None:
    entry = quality(cli, "mlp.onnx", "--latency", "--batch-size", "8", "--repeats", "3")
    assert entry["latency_ms"]["runtime"] == "onnxruntime"
    assert entry["latency_ms"]["input"] == [8, 64]  # the graph's input shape, batch free
    assert "by onnxruntime (CPUExecutionProvider)" in entry["latency_ms"]["protocol"]
    torch_entry = quality(cli, "mlp.safetensors", "--latency", "--repeats", "3")["latency_ms"]
    assert torch_entry["runtime"] == "torch"
    same = quality(cli, "mlp.onnx", "--reference", "mlp.safetensors", "--data", "digits")
    assert same["cosine_similarity"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert same["top1_agreement"]["value"] == 1.0


def test_refusals(cli, here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    np.savez(here / "wide.npz", x=np.zeros((4, 32), np.float32), y=np.zeros(4, np.int64))
    run_refused(cli, here, ("eval", "mlp.onnx", "--data", "wide.npz"), 2, "onnxruntime cannot run")
    run_refused(cli, here, ("eval", "mlp.onnx", "--data", "mlp.onnx"), 2, "mlp.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    run_refused(cli, here, ("eval", "mlp.onnx", "--data", "digits"), 3, "onnxruntime")
