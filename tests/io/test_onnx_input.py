"""ONNX in, ONNX out: `inspect` and weights-only `prune` on an ONNX file, and what is refused.

The models are built by hand with onnx.helper, so the tests do not depend on prunecli's exporter;
the results are read back with onnx and run in onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import files_in, report_of

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

WEIGHTS = ["conv.w", "dense.kernel", "head.w"]  # Conv weight, MatMul weight, Gemm weight
NOT_WEIGHTS = ["conv.b", "dense.b", "head.b", "offset"]  # biases, and an Add operand


def initializers(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {
        "conv.w": (4, 1, 3, 3),
        "conv.b": (4,),
        "dense.kernel": (144, 16),
        "dense.b": (16,),
        "offset": (1, 16),  # 2-D and floating, but an activation offset, not a weight
        "head.w": (10, 16),
        "head.b": (10,),
    }
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def build_model(arrays: dict[str, np.ndarray], sparse: tuple[str, ...] = ()) -> onnx.ModelProto:
    """x[1,1,8,8] → Conv → Relu → Flatten → MatMul → Add(b) → Add(offset) → Gemm(transB)."""
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "dense.kernel"], ["m"]),
        helper.make_node("Add", ["m", "dense.b"], ["a"]),
        helper.make_node("Add", ["a", "offset"], ["o"]),
        helper.make_node("Gemm", ["o", "head.w", "head.b"], ["y"], transB=1),
    ]
    dense = [numpy_helper.from_array(a, n) for n, a in arrays.items() if n not in sparse]
    sparse_inits = []
    for name in sparse:  # coordinate indices [NNZ, rank], the other layout ONNX allows
        coords = np.argwhere(arrays[name] != 0).astype(np.int64)
        values = numpy_helper.from_array(arrays[name][arrays[name] != 0], name)
        indices = numpy_helper.from_array(coords, "")
        sparse_inits.append(helper.make_sparse_tensor(values, indices, arrays[name].shape))
    graph = helper.make_graph(
        nodes,
        "handmade",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializer=dense,
        sparse_initializer=sparse_inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def read_back(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for sparse in model.graph.sparse_initializer:
        dense = np.zeros(tuple(sparse.dims), np.float32)
        indices = numpy_helper.to_array(sparse.indices)
        flat = indices if indices.ndim == 1 else np.ravel_multi_index(indices.T, dense.shape)
        dense.reshape(-1)[flat] = numpy_helper.to_array(sparse.values)
        arrays[sparse.values.name] = dense
    return arrays


def run(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    return session.run(None, {"x": x})[0]


@pytest.fixture
def onnx_file(workdir: Path) -> Path:
    return save(build_model(initializers()), workdir / "model.onnx")


def test_inspect_lists_weight_initializers(cli, onnx_file: Path) -> None:
    result = cli("inspect", onnx_file, "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["model"]["format"] == "onnx"
    assert report["model"]["file_bytes"] == onnx_file.stat().st_size
    assert [layer["name"] for layer in report["layers"]] == WEIGHTS
    assert report["totals"]["prunable_params"] == 36 + 144 * 16 + 160
    everything = report_of(cli("inspect", onnx_file, "--all", "--json"))
    assert {layer["name"] for layer in everything["layers"]} == set(WEIGHTS + NOT_WEIGHTS)
    human = cli("inspect", onnx_file)
    assert "onnx" in human.stdout and "dense.kernel" in human.stdout


def test_prune_magnitude_writes_onnx(cli, onnx_file: Path, workdir: Path) -> None:
    result = cli("prune", onnx_file, "--method", "magnitude", "--sparsity", "0.8", "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    out = workdir / "model.pruned.onnx"  # the default name: ONNX in, ONNX out
    assert report["output"] == {
        "path": str(out),
        "format": "onnx",
        "file_bytes": out.stat().st_size,
    }
    original, pruned = initializers(), read_back(out)
    total = sum(original[n].size for n in WEIGHTS)
    assert sum(int((pruned[n] == 0).sum()) for n in WEIGHTS) == round(0.8 * total)
    for name in NOT_WEIGHTS:  # biases and the Add operand are untouched
        assert np.array_equal(pruned[name], original[name]), name
    kept = np.concatenate([np.abs(original[n][pruned[n] != 0]) for n in WEIGHTS])
    dropped = np.concatenate([np.abs(original[n][pruned[n] == 0]) for n in WEIGHTS])
    assert dropped.max() <= kept.min()  # global magnitude
    for name in WEIGHTS:  # kept weights keep their values
        assert np.array_equal(pruned[name][pruned[name] != 0], original[name][pruned[name] != 0])
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert run(out).shape == (1, 10) and np.isfinite(run(out)).all()
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert metadata["prunecli.method"] == "magnitude"
    assert json.loads(metadata["prunecli.prunable"]) == WEIGHTS
    again = report_of(cli("inspect", out, "--json"))
    assert again["totals"]["prunable_nonzero"] == total - round(0.8 * total)


def test_prune_random_to_stdout_is_deterministic(cli, onnx_file: Path, workdir: Path) -> None:
    args = ("prune", onnx_file, "-m", "random", "-s", "0.5", "--seed", "3", "-q")
    first = cli(*args, "-o", "-").stdout_bytes
    assert cli(*args, "-o", "b.onnx").exit_code == 0
    assert (workdir / "b.onnx").read_bytes() == first
    arrays = read_back(workdir / "b.onnx")
    total = sum(arrays[n].size for n in WEIGHTS)
    assert sum(int((arrays[n] == 0).sum()) for n in WEIGHTS) == round(0.5 * total)
    assert run(workdir / "b.onnx").shape == (1, 10)


def test_sparse_initializers_in_stay_sparse(cli, workdir: Path) -> None:
    arrays = initializers()
    arrays["dense.kernel"][np.abs(arrays["dense.kernel"]) < 1.0] = 0  # about 68% zeros
    path = save(build_model(arrays, sparse=("dense.kernel",)), workdir / "s.onnx")
    report = report_of(cli("inspect", path, "--json"))
    layer = next(layer for layer in report["layers"] if layer["name"] == "dense.kernel")
    assert layer["nonzero"] == int(np.count_nonzero(arrays["dense.kernel"]))
    result = cli("prune", path, "-m", "magnitude", "-s", "0.9", "-o", "p.onnx", "-q")
    assert result.exit_code == 0, result.stderr
    model = onnx.load(str(workdir / "p.onnx"))
    assert [s.values.name for s in model.graph.sparse_initializer] == ["dense.kernel"]
    pruned = read_back(workdir / "p.onnx")
    total = sum(pruned[n].size for n in WEIGHTS)
    assert sum(int((pruned[n] == 0).sum()) for n in WEIGHTS) == round(0.9 * total)
    assert run(workdir / "p.onnx").shape == (1, 10)


def test_graph_methods_and_arch_refused(cli, onnx_file: Path, workdir: Path) -> None:
    result = cli("prune", onnx_file, "-m", "synflow", "-s", "0.5")
    assert result.exit_code == 3
    assert "ONNX" in result.stderr and "magnitude, random" in result.stderr
    result = cli("prune", onnx_file, "-m", "magnitude", "-s", "0.5", "--arch", "mlp")
    assert result.exit_code == 2 and "drop --arch" in result.stderr
    result = cli("prune", onnx_file, "-m", "magnitude", "-s", "0.5", "-o", "m.safetensors")
    assert result.exit_code == 3 and "*.onnx" in result.stderr
    result = cli("prune", onnx_file, "-m", "magnitude", "-s", "0.5", "--format", "bitmask")
    assert result.exit_code == 2
    result = cli("export", onnx_file, "--to", "onnx", "-o", "e.onnx")
    assert result.exit_code == 3
    assert files_in(workdir) == {"model.onnx"}


# --- bad files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_onnx_exits_2(cli, onnx_file: Path, workdir: Path, damage: str) -> None:
    data = onnx_file.read_bytes()
    bad = {"truncated": data[: len(data) // 2], "garbage": b"\x0a\xff" + data[7:99], "empty": b""}
    broken = workdir / "broken.onnx"
    broken.write_bytes(bad[damage])
    for command in (("inspect", broken), ("prune", broken, "-m", "magnitude", "-s", "0.5")):
        result = cli(*command)
        assert result.exit_code == 2, (damage, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "broken.onnx" in lines[0]
        assert "Traceback" not in result.stderr
    assert files_in(workdir) == {"model.onnx", "broken.onnx"}


def external(model: onnx.ModelProto, name: str, location: str, length: int) -> onnx.ModelProto:
    """Point initializer ``name`` at external data ``location``."""
    for init in model.graph.initializer:
        if init.name == name:
            init.ClearField("raw_data")
            init.ClearField("float_data")
            init.data_location = TensorProto.EXTERNAL
            del init.external_data[:]
            for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
                entry = init.external_data.add()
                entry.key, entry.value = key, value
    return model


@pytest.mark.parametrize("where", ["parent", "absolute", "link"])
def test_external_data_outside_the_folder_is_refused(cli, workdir: Path, where: str) -> None:
    arrays = initializers()
    secret = workdir / "secret.bin"
    secret.write_bytes(arrays["head.w"].tobytes())
    folder = workdir / "models"
    folder.mkdir()
    location = {"parent": "../secret.bin", "absolute": str(secret), "link": "w.bin"}[where]
    if where == "link":
        (folder / "w.bin").symlink_to(secret)
    model = external(build_model(arrays), "head.w", location, arrays["head.w"].nbytes)
    path = save(model, folder / "m.onnx")
    result = cli("inspect", path)
    assert result.exit_code == 2
    assert "outside the model's folder" in result.stderr and "head.w" in result.stderr
    result = cli("prune", path, "-m", "magnitude", "-s", "0.5")
    assert result.exit_code == 2
    assert not (folder / "m.pruned.onnx").exists()


def test_external_data_beside_the_model_is_read(cli, workdir: Path) -> None:
    arrays = initializers()
    (workdir / "w.bin").write_bytes(arrays["dense.kernel"].tobytes())
    model = external(build_model(arrays), "dense.kernel", "w.bin", arrays["dense.kernel"].nbytes)
    path = save(model, workdir / "m.onnx")
    result = cli("prune", path, "-m", "magnitude", "-s", "0.5", "-o", "p.onnx", "--json")
    assert result.exit_code == 0, result.stderr
    pruned = read_back(workdir / "p.onnx")  # written as one file, the data inline
    assert pruned["dense.kernel"].shape == (144, 16)
    assert run(workdir / "p.onnx").shape == (1, 10)


def test_external_data_too_short(cli, workdir: Path) -> None:
    arrays = initializers()
    (workdir / "w.bin").write_bytes(arrays["dense.kernel"].tobytes()[:100])
    model = external(build_model(arrays), "dense.kernel", "w.bin", arrays["dense.kernel"].nbytes)
    result = cli("inspect", save(model, workdir / "m.onnx"))
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_score_then_prune_from_scores(cli, onnx_file: Path, workdir: Path) -> None:
    from safetensors.numpy import load_file

    assert cli("score", onnx_file, "-m", "magnitude", "-q").exit_code == 0
    scores = load_file(str(workdir / "model.scores.safetensors"))  # scores stay safetensors
    original = initializers()
    assert sorted(scores) == sorted(WEIGHTS)
    assert all(np.array_equal(scores[n], np.abs(original[n])) for n in WEIGHTS)
    args = ("prune", onnx_file, "--scores", "model.scores.safetensors", "-s", "0.5", "-q")
    assert cli(*args).exit_code == 0
    pruned = read_back(workdir / "model.pruned.onnx")
    total = sum(original[n].size for n in WEIGHTS)
    assert sum(int((pruned[n] == 0).sum()) for n in WEIGHTS) == round(0.5 * total)
