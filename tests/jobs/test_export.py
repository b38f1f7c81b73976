"""`prunecli export`: ONNX (dense and sparse initializers), pt2, safetensors, and what it refuses.

Every artifact is checked by an independent route: onnx / onnxruntime / torch.export.load /
safetensors read it, and a module rebuilt from the zoo gives the reference outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_MLP, files_in, report_of, write_weights
from safetensors.torch import load_file, save_file

from prunecli.models.zoo import build_arch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
from onnx import numpy_helper  # noqa: E402

LENET5_WEIGHTS = ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"]


def pruned_zoo(
    path: Path, arch: str, kwargs: dict | None = None, sparsity: float = 0.8, seed: int = 0
) -> Path:
    """A zoo model with its smallest |w| zeroed per weight tensor, and BatchNorm statistics
    that are not the identity (so folding really scales the convolutions)."""
    torch.manual_seed(seed)
    module = build_arch(arch, kwargs or {}).module
    tensors = {}
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().clone()
        if "bn" in name or "shortcut.1" in name:
            if name.endswith(("weight", "running_var")):
                tensor = torch.rand_like(tensor) + 0.5
            elif name.endswith(("bias", "running_mean")):
                tensor = torch.randn_like(tensor) * 0.1
        elif tensor.dim() >= 2 and sparsity > 0:
            cut = tensor.abs().flatten().kthvalue(round(sparsity * tensor.numel())).values
            tensor[tensor.abs() <= cut] = 0
        tensors[name] = tensor.contiguous()
    metadata = {"prunecli.arch": arch, "prunecli.arch_kwargs": json.dumps(kwargs or {})}
    save_file(tensors, str(path), metadata={"format": "pt", **metadata})
    return path


def reference_module(path: Path, arch: str, kwargs: dict | None = None) -> torch.nn.Module:
    module = build_arch(arch, kwargs or {}).module
    module.load_state_dict(load_file(str(path)))
    return module.eval()


def onnx_initializers(path: Path) -> dict[str, np.ndarray]:
    """Every initializer, sparse ones densified here from their linear int64 indices."""
    model = onnx.load(str(path))
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for sparse in model.graph.sparse_initializer:
        indices = numpy_helper.to_array(sparse.indices)
        assert indices.dtype == np.int64 and indices.ndim == 1
        dense = np.zeros(int(np.prod(sparse.dims)), dtype=np.float32)
        dense[indices] = numpy_helper.to_array(sparse.values)
        arrays[sparse.values.name] = dense.reshape(tuple(sparse.dims))
    return arrays


def max_scaled_diff(path: Path, module: torch.nn.Module, shape: tuple[int, ...]) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(123))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = module(x).numpy()
    return float(np.abs(got - expected).max() / max(1.0, np.abs(expected).max()))


# --- ONNX ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, kwargs, shape",
    [("mlp", SMALL_MLP, (12,)), ("lenet5", None, (1, 28, 28)), ("resnet20", None, (3, 32, 32))],
)
def test_onnx_export_parity_and_zeros(cli, workdir: Path, arch, kwargs, shape) -> None:
    source = pruned_zoo(workdir / "m.safetensors", arch, kwargs)
    result = cli("export", source, "--to", "onnx", "-o", "m.onnx", "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    export = report["export"]
    assert export["format"] == "onnx" and export["written"] and export["opset"] >= 18
    assert export["parity"]["passed"] and export["parity"]["relative"] <= 1e-4
    assert export["file_bytes"] == (workdir / "m.onnx").stat().st_size
    assert report["output"]["path"] == "m.onnx"
    assert files_in(workdir) == {"m.safetensors", "m.onnx"}  # no staging left behind
    module = reference_module(source, arch, kwargs)
    assert max_scaled_diff(workdir / "m.onnx", module, shape) <= 1e-4
    # zeros preserved: every pruned weight is still an exact zero in the ONNX initializer
    tensors, arrays = load_file(str(source)), onnx_initializers(workdir / "m.onnx")
    weights = [n for n in tensors if tensors[n].dim() >= 2]
    for name in weights:
        assert np.all(arrays[name][tensors[name].numpy() == 0] == 0), name
    source_zeros = sum(int((tensors[n] == 0).sum()) for n in weights)
    assert export["sparsity"]["source_zeros"] == source_zeros
    assert export["sparsity"]["exported_zeros"] == sum(int((arrays[n] == 0).sum()) for n in weights)
    assert export["sparsity"]["zeros_preserved"]
    folded = any("BatchNorm" in note for note in export["notes"])
    assert folded == (arch == "resnet20")
    if folded:  # folding scaled the weights (the statistics are not the identity)
        assert not np.allclose(arrays["conv1.weight"], tensors["conv1.weight"].numpy())


def test_onnx_human_report(cli, workdir: Path) -> None:
    source = pruned_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    result = cli("export", source, "-o", "m.onnx")  # --to from the suffix
    assert result.exit_code == 0, result.stderr
    for text in ("export to onnx", "zeros preserved", "check parity: passed", "wrote m.onnx"):
        assert text in result.stdout
    assert result.stderr == ""  # the exporter's own chatter is held back


def test_sparse_initializers(cli, workdir: Path) -> None:
    source = pruned_zoo(workdir / "m.safetensors", "lenet5", sparsity=0.9)
    args = ("export", source, "--to", "onnx", "--sparse-initializers", "-o", "s.onnx", "--json")
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    export = report_of(result)["export"]
    assert export["storage"] == "sparse-initializers"
    assert export["parity"]["passed"]
    model = onnx.load(str(workdir / "s.onnx"))
    onnx.checker.check_model(model)
    sparse_names = {s.values.name for s in model.graph.sparse_initializer}
    assert sparse_names == set(LENET5_WEIGHTS)  # the biases are dense: smaller that way
    assert export["sparse_initializers"]["converted"] == len(LENET5_WEIGHTS)
    # 90% zeros: 12 bytes per non-zero (int64 index + fp32 value) against 4 per element
    assert export["file_bytes"] < 0.45 * export["dense_bytes"]
    tensors, arrays = load_file(str(source)), onnx_initializers(workdir / "s.onnx")
    for name in LENET5_WEIGHTS:
        assert np.array_equal(arrays[name], tensors[name].numpy()), name
    module = reference_module(source, "lenet5")
    assert max_scaled_diff(workdir / "s.onnx", module, (1, 28, 28)) <= 1e-4


# --- pt2 and safetensors ---------------------------------------------------------------------


def test_pt2_round_trip(cli, workdir: Path) -> None:
    source = pruned_zoo(workdir / "m.safetensors", "lenet5")
    result = cli("export", source, "--to", "pt2", "-o", "m.pt2", "--json")
    assert result.exit_code == 0, result.stderr
    export = report_of(result)["export"]
    assert export["parity"]["passed"] and export["sparsity"]["zeros_preserved"]
    program = torch.export.load(str(workdir / "m.pt2"))
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = reference_module(source, "lenet5")(x)
        assert torch.allclose(program.module()(x), expected, atol=1e-6)
    tensors = load_file(str(source))
    for name in LENET5_WEIGHTS:
        assert torch.equal(program.state_dict[name], tensors[name])
    # and prunecli reads its own artifact back
    assert report_of(cli("inspect", "m.pt2", "--json"))["totals"]["sparsity"] > 0.79


def test_safetensors_dense_copy_and_bitmask(cli, workdir: Path) -> None:
    source = pruned_zoo(workdir / "m.safetensors", "lenet5", sparsity=0.9)
    result = cli("export", source, "--to", "safetensors", "-o", "d.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    copied, original = load_file(str(workdir / "d.safetensors")), load_file(str(source))
    assert copied.keys() == original.keys()
    assert all(torch.equal(copied[k], original[k]) for k in original)
    assert report_of(result)["checks"][0]["name"] == "round-trip"

    args = ("export", source, "--to", "safetensors", "--format", "bitmask", "-o", "b.safetensors")
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    export = report_of(result)["export"]
    assert export["storage"] == "bitmask"
    assert export["file_bytes"] < 0.3 * export["dense_bytes"]
    assert export["dense_bytes"] == (workdir / "d.safetensors").stat().st_size
    inspected = report_of(cli("inspect", "b.safetensors", "--json"))
    assert inspected["totals"]["prunable_nonzero"] == sum(
        int(original[n].count_nonzero()) for n in LENET5_WEIGHTS
    )


def test_pipe_prune_into_export(workdir: Path) -> None:
    source = pruned_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP, sparsity=0.0)
    prune = subprocess.Popen(
        [sys.executable, "-m", "prunecli", "prune", str(source), "--method", "magnitude"]
        + ["--sparsity", "0.9", "--format", "bitmask", "-o", "-", "-q"],
        stdout=subprocess.PIPE,
        cwd=workdir,
    )
    export = subprocess.run(
        [sys.executable, "-m", "prunecli", "export", "-", "--to", "onnx", "-o", "m.onnx"]
        + ["--json"],
        stdin=prune.stdout,
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=300,
    )
    prune.stdout.close()
    assert prune.wait(timeout=60) == 0
    assert export.returncode == 0, export.stderr
    document = json.loads(export.stdout)
    assert document["model"]["path"] == "-"
    assert document["export"]["parity"]["passed"]
    arrays = onnx_initializers(workdir / "m.onnx")
    weights = ["fc1.weight", "fc2.weight", "fc3.weight"]
    zeros = sum(int((arrays[n] == 0).sum()) for n in weights)
    assert zeros == round(0.9 * 352) == document["export"]["sparsity"]["exported_zeros"]


# --- what export refuses ---------------------------------------------------------------------


def test_weights_only_needs_arch(cli, workdir: Path) -> None:
    path = write_weights(workdir / "w.safetensors", {"fc.weight": torch.randn(4, 3)})
    for target in ("onnx", "pt2"):
        result = cli("export", path, "--to", target, "-o", f"w.{target}")
        assert result.exit_code == 3
        assert "pass --arch" in result.stderr
    assert files_in(workdir) == {"w.safetensors"}


UNEXPORTABLE = """
import torch

@torch.library.custom_op("prunetest::" + __name__, mutates_args=())
def wobble(x: torch.Tensor) -> torch.Tensor:
    return x * 2

@wobble.register_fake
def _(x):
    return torch.empty_like(x)

class Net(torch.nn.Module):
    input_shape = (4,)

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(wobble(x))
"""


def test_unexportable_operator_suggests_pt2(cli, workdir: Path, fresh_module_name) -> None:
    name = fresh_module_name("unexportable", UNEXPORTABLE)
    path = write_weights(
        workdir / "n.safetensors", {"fc.weight": torch.randn(3, 4), "fc.bias": torch.zeros(3)}
    )
    arch = ("--arch", f"{name}:Net")
    result = cli("export", path, *arch, "--to", "onnx", "-o", "n.onnx")
    assert result.exit_code == 3
    assert f"prunetest.{name}.default" in result.stderr  # the operator, by name
    assert "--to pt2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # message and hint, no traceback
    assert not (workdir / "n.onnx").exists()
    assert not [p for p in files_in(workdir) if p.startswith(".")]  # no staging left
    result = cli("export", path, *arch, "--to", "pt2", "-o", "n.pt2", "--json")
    assert result.exit_code == 0, result.stderr  # the suggestion works
    assert report_of(result)["export"]["parity"]["passed"]


def test_parity_failure_writes_nothing(cli, workdir: Path, monkeypatch) -> None:
    from prunecli.io import onnx as onnx_io

    real = onnx_io.run_onnx

    def off_by_a_bit(path, inputs):
        return [[y + 1e-3 for y in outputs] for outputs in real(path, inputs)]

    monkeypatch.setattr(onnx_io, "run_onnx", off_by_a_bit)
    source = pruned_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    result = cli("export", source, "--to", "onnx", "-o", "m.onnx", "--json")
    assert result.exit_code == 1
    report = report_of(result)
    assert report["export"]["written"] is False and report["output"] is None
    assert report["export"]["parity"]["passed"] is False
    assert report["export"]["parity"]["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert "parity" in result.stderr
    assert files_in(workdir) == {"m.safetensors"}
    # a looser tolerance accepts the same difference; --no-verify skips the run
    assert cli("export", source, "-o", "m.onnx", "--atol", "1e-2", "-q").exit_code == 0
    result = cli("export", source, "-o", "n.onnx", "--no-verify", "--json")
    assert result.exit_code == 0 and report_of(result)["export"]["parity"] is None


def test_existing_output_and_output_is_input(cli, workdir: Path) -> None:
    source = pruned_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    (workdir / "m.pt2").write_bytes(b"keep me")
    result = cli("export", source, "--to", "pt2", "-o", "m.pt2")
    assert result.exit_code == 2 and "--force" in result.stderr
    assert (workdir / "m.pt2").read_bytes() == b"keep me"
    assert cli("export", source, "--to", "pt2", "-o", "m.pt2", "--force", "-q").exit_code == 0
    assert torch.export.load(str(workdir / "m.pt2")) is not None
    before = source.read_bytes()
    result = cli("export", source, "--to", "safetensors", "-o", source, "--force")
    assert result.exit_code == 2 and "is the input file" in result.stderr
    assert source.read_bytes() == before


@pytest.mark.parametrize(
    "args, says",
    [
        (("--to", "tflite", "-o", "m.tflite"), "unknown --to"),
        (("--to", "onnx", "-o", "m.pt2"), "does not match"),
        (("-o", "m.bin"), "pass --to"),
        (("--to", "pt2", "-o", "m.pt2", "--sparse-initializers"), "--to onnx only"),
        (("--to", "onnx", "-o", "m.onnx", "--format", "bitmask"), "--to safetensors only"),
        (("--to", "safetensors", "-o", "x.safetensors", "--dynamic-batch"), "onnx and pt2"),
        (("--to", "safetensors", "-o", "x.safetensors", "--static-batch"), "onnx and pt2"),
        (("--to", "onnx", "-o", "m.onnx", "--atol", "-1"), "--atol"),
        (("--to", "onnx", "-o", "m.onnx", "--input-shape", "0,3"), "--input-shape"),
    ],
)
def test_bad_options(cli, workdir: Path, args, says) -> None:
    source = pruned_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    result = cli("export", source, *args)
    assert result.exit_code == 2
    assert says in result.stderr
    assert files_in(workdir) == {"m.safetensors"}


def test_missing_onnx_extra(cli, workdir: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now fails
    source = pruned_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    result = cli("export", source, "--to", "onnx", "-o", "m.onnx")
    assert result.exit_code == 3
    assert "pip install 'prunecli[onnx]'" in result.stderr
    assert files_in(workdir) == {"m.safetensors"}


def test_opset_the_exporter_cannot_write(cli, workdir: Path) -> None:
    source = pruned_zoo(workdir / "m.safetensors", "mlp", SMALL_MLP)
    assert cli("export", source, "-o", "m.onnx", "--opset", "18", "-q").exit_code == 0
    assert onnx.load(str(workdir / "m.onnx")).opset_import[0].version == 18
    result = cli("export", source, "-o", "old.onnx", "--opset", "9")
    assert result.exit_code == 3 and "opset 9" in result.stderr
    assert not (workdir / "old.onnx").exists()


UNTRACEABLE = """
import torch

class Branchy(torch.nn.Module):
    input_shape = (4,)

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)  # data-dependent control flow

class FixedBatch(Branchy):
    def forward(self, x):
        return self.fc(x).view(1, 3)  # only batch 1 fits
"""


def test_untraceable_and_fixed_batch(cli, workdir: Path, fresh_module_name) -> None:
    name = fresh_module_name("untraceable", UNTRACEABLE)
    weights = {"fc.weight": torch.randn(3, 4), "fc.bias": torch.zeros(3)}
    path = write_weights(workdir / "n.safetensors", weights)
    for target in ("onnx", "pt2"):
        result = cli("export", path, "--arch", f"{name}:Branchy", "-o", f"b.{target}")
        assert result.exit_code == 3
        assert "cannot trace" in result.stderr and "control flow" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 2  # the tracer's dumps are held back
        assert not (workdir / f"b.{target}").exists()
    fixed = ("--arch", f"{name}:FixedBatch")
    # asked for explicitly, a batch the model fixes is refused, naming the opt-out
    result = cli("export", path, *fixed, "-o", "f.onnx", "--dynamic-batch")
    assert result.exit_code == 3 and "batch dimension cannot be dynamic" in result.stderr
    assert "--static-batch" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2
    assert not [p for p in files_in(workdir) if p.endswith((".onnx", ".pt2")) or p[0] == "."]
    # by default the export falls back to a fixed batch, and says so on stderr and in JSON
    result = cli("export", path, *fixed, "-o", "f.pt2", "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["export"]["dynamic_batch"] is False
    assert report["export"]["dynamic_axes"] == {}
    assert report["export"]["parity"]["input_shapes"] == [[1, 4]]
    assert "fixes the batch dimension at 1" in report["warnings"][0]
    assert "warning: the export fixes the batch dimension at 1" in result.stderr
    with torch.no_grad():  # the artifact runs at batch 1, as the model does
        program = torch.export.load(str(workdir / "f.pt2"))
        x = torch.randn(1, 4)
        assert torch.allclose(program.module()(x), x @ weights["fc.weight"].T, atol=1e-6)
