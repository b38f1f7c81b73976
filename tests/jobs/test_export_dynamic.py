"""`export`'s dynamic axes: the batch is free by default (the sequence too for token-id models),
read back from the artifact and verified at several batch sizes; `--static-batch` fixes it.

The independent routes: onnxruntime and torch.export.load run the artifacts at batch sizes the
export never ran (32), against the PyTorch module rebuilt from the zoo or the test's own source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_MLP, assert_refused, files_in, report_of, write_llama, write_weights
from test_export import pruned_zoo, reference_module

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def scaled_diff(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / max(1.0, np.abs(expected).max()))


def input_dims(path: Path) -> list[str | int]:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in dims]


def test_onnx_batch_is_free_by_default(cli, workdir: Path) -> None:
    source = pruned_zoo(workdir / "m.safetensors", "lenet5")
    result = cli("export", source, "-o", "m.onnx", "--json")
    assert result.exit_code == 0, result.stderr
    export = report_of(result)["export"]
    assert input_dims(workdir / "m.onnx") == ["batch", 1, 28, 28]
    assert export["dynamic_batch"] is True and export["token_ids"] is False
    run = session(workdir / "m.onnx")
    (output,) = (o.name for o in run.get_outputs())
    assert export["dynamic_axes"] == {"input": {"0": "batch"}, output: {"0": "batch"}}
    # verified at batch sizes 1..4, and onnxruntime runs batch 32 too, matching PyTorch
    assert [s[0] for s in export["parity"]["input_shapes"]] == [1, 2, 3, 4]
    assert export["parity"]["passed"]
    module = reference_module(source, "lenet5")
    generator = torch.Generator().manual_seed(5)
    for batch in (1, 32):
        x = torch.randn(batch, 1, 28, 28, generator=generator)
        (got,) = run.run(None, {"input": x.numpy()})
        with torch.no_grad():
            expected = module(x).numpy()
        assert got.shape == (batch, 10)
        assert scaled_diff(got, expected) <= 1e-4
    # inspect shows the symbolic dimension
    shown = cli("inspect", "m.onnx")
    assert f"input: input float32 [batch, 1, 28, 28] -> output: {output} float32 [batch, 10]" in (
        shown.stdout
    )


def test_static_batch_is_fixed(cli, workdir: Path) -> None:
    source = pruned_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    result = cli("export", source, "-o", "s.onnx", "--static-batch", "--json")
    assert result.exit_code == 0, result.stderr
    export = report_of(result)["export"]
    assert export["dynamic_batch"] is False and export["dynamic_axes"] == {}
    assert export["parity"]["input_shapes"] == [[1, 12]]
    assert input_dims(workdir / "s.onnx") == [1, 12]
    run = session(workdir / "s.onnx")
    assert run.run(None, {"input": np.ones((1, 12), np.float32)})[0].shape == (1, 4)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # onnxruntime refuses batch 32
        run.run(None, {"input": np.ones((32, 12), np.float32)})
    graph = report_of(cli("inspect", "s.onnx", "--json"))["model"]["graph"]
    assert graph["inputs"] == [{"name": "input", "dtype": "float32", "shape": [1, 12]}]


def test_pt2_batch_is_free(cli, workdir: Path) -> None:
    source = pruned_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    result = cli("export", source, "-o", "m.pt2", "--json")
    assert result.exit_code == 0, result.stderr
    export = report_of(result)["export"]
    assert export["dynamic_batch"] is True
    assert export["dynamic_axes"]["input"] == {"0": "batch"}
    program = torch.export.load(str(workdir / "m.pt2"))
    module = reference_module(source, "mlp", SMALL_MLP)
    with torch.no_grad():
        for batch in (1, 32):
            x = torch.randn(batch, 12, generator=torch.Generator().manual_seed(batch))
            got = program.module()(x)
            assert got.shape == (batch, 4)
            assert torch.allclose(got, module(x), atol=1e-5)


TOKENS = """
import torch

class Tokens(torch.nn.Module):
    input_shape = (6,)  # the sequence length
    main_input_name = "input_ids"  # Hugging Face's convention: takes token ids

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, ids):
        return self.fc(self.embed(ids).relu())

class FixedLength(Tokens):
    def __init__(self):
        super().__init__()
        self.pos = torch.nn.Parameter(torch.randn(6, 8))

    def forward(self, ids):
        return self.fc(self.embed(ids) + self.pos)  # sequences of 6 only
"""


def test_token_model_batch_and_sequence_are_free(cli, workdir: Path, fresh_module_name) -> None:
    name = fresh_module_name("tokens", TOKENS)
    module = __import__(name).Tokens().eval()
    path = write_weights(workdir / "t.safetensors", module.state_dict())
    result = cli("export", path, "--arch", f"{name}:Tokens", "-o", "t.onnx", "--json")
    assert result.exit_code == 0, result.stderr
    export = report_of(result)["export"]
    assert export["token_ids"] is True
    assert export["dynamic_axes"]["ids"] == {"0": "batch", "1": "seq"}
    # parity ran at two batch sizes per sequence length, and two lengths
    assert export["parity"]["input_shapes"] == [[1, 6], [2, 3], [3, 6], [4, 3]]
    run = session(workdir / "t.onnx")
    assert run.get_inputs()[0].type == "tensor(int64)"
    for batch, length in ((1, 6), (32, 11)):  # 11: a length the export never ran
        ids = torch.randint(0, 20, (batch, length), generator=torch.Generator().manual_seed(1))
        (got,) = run.run(None, {"ids": ids.numpy()})
        with torch.no_grad():
            assert scaled_diff(got, module(ids).numpy()) <= 1e-5
    # a model that fixes its length: the sequence is fixed, the batch stays free, a warning says
    fixed = __import__(name).FixedLength().eval()
    path = write_weights(workdir / "f.safetensors", fixed.state_dict())
    result = cli("export", path, "--arch", f"{name}:FixedLength", "-o", "f.pt2", "--json")
    assert result.exit_code == 0, result.stderr
    document = report_of(result)
    assert document["export"]["dynamic_axes"]["ids"] == {"0": "batch"}
    assert "fixes the seq dimension at 6" in document["warnings"][0]
    program = torch.export.load(str(workdir / "f.pt2"))
    ids = torch.randint(0, 20, (32, 6))
    with torch.no_grad():
        assert torch.allclose(program.module()(ids), fixed(ids), atol=1e-5)


def test_hugging_face_folder_is_refused(cli, workdir: Path) -> None:
    folder = write_llama(workdir / "llama")
    before = files_in(workdir)
    assert_refused(cli("export", folder, "--to", "pt2", "-o", "l.pt2"), 3, "Hugging Face")
    assert files_in(workdir) == before
