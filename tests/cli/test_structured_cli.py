"""`prune --granularity channel|neuron` on modules, as a user runs it (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from prunecli.models import zoo
from prunecli.models.loaded import load_model
from tests.conftest import metadata_of, report_of, run_refused, write_weights, write_zoo


def test_resnet20_channels_out_then_plain_zoo_build_loads_it(cli, workdir: Path) -> None:
    source = write_zoo(workdir / "r20.safetensors", "resnet20")
    result = cli("prune", source, "-m", "magnitude", "--granularity", "channel", "-s", "0.5",
                 "-o", "slim.safetensors", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["pruning"]["granularity"] == "channel"
    assert len(report["structure"]["groups"]) == 12
    assert abs(report["pruning"]["achieved_sparsity"] - 0.5) < 0.01
    assert report["cost"]["params_ratio"] < 0.55 and report["cost"]["macs_ratio"] < 1.0
    odd = [g for g in report["structure"]["groups"] if g["after"] % 8]
    assert odd and any("--round-to 8" in w for w in report["warnings"])
    # loadable without prunecli's loader: the zoo builder with the widths the metadata names
    meta = metadata_of(workdir / "slim.safetensors")
    kwargs = json.loads(meta["prunecli.arch_kwargs"])
    assert set(kwargs) == {"widths", "mids"} and len(kwargs["mids"]) == 9
    module = zoo.build_arch("resnet20", kwargs).module
    module.load_state_dict(load_file(workdir / "slim.safetensors"), strict=True)
    written = load_file(workdir / "slim.safetensors")
    assert sum(p.numel() for p in module.parameters()) < 0.55 * sum(
        p.numel() for p in zoo.build_arch("resnet20").module.parameters()
    )
    assert report["totals"]["all_params"] == sum(t.numel() for t in written.values())
    inspected = cli("inspect", "slim.safetensors", "--json")
    assert inspected.exit_code == 0, inspected.stderr
    assert report_of(inspected)["cost"]["params"] == report["cost"]["params"]


def test_taylor_neurons_with_reconstruction_on_digits(cli, workdir: Path) -> None:
    source = write_zoo(workdir / "m.safetensors", "mlp", {"widths": [64, 48, 32, 10]})
    result = cli("prune", source, "-m", "taylor", "--granularity", "neuron", "-s", "0.4",
                 "--data", "digits", "--round-to", "4", "-o", "slim.safetensors", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    structure = report_of(result)["structure"]
    assert structure["reconstructed"] == ["fc2", "fc3"]
    assert all(g["after"] % 4 == 0 for g in structure["groups"])
    widths = json.loads(metadata_of(workdir / "slim.safetensors")["prunecli.arch_kwargs"])["widths"]
    assert widths == [64, *(g["after"] for g in structure["groups"]), 10]
    retrained = cli(
        "retrain", "slim.safetensors", "--data", "digits", "--steps", "5", "-o", "ft.safetensors"
    )
    assert retrained.exit_code == 0, retrained.stderr


def test_lenet5_without_zoo_widths_is_rebuilt_from_the_stored_shapes(cli, workdir: Path) -> None:
    source = write_zoo(workdir / "l.safetensors", "lenet5")
    result = cli("prune", source, "-m", "random", "--granularity", "channel", "-s", "0.3",
                 "--scope", "layer", "-o", "slim.safetensors", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    model = load_model(str(workdir / "slim.safetensors"))
    widths = [m.out_channels for m in model.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths[0] < 6 and widths[1] < 16
    out = model.module(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


FACTORY = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, width=24):
        super().__init__()
        self.a = nn.Linear(8, width)
        self.b = nn.Linear(width, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))

class Branchy(Net):
    def forward(self, x):
        return self.b(torch.relu(self.a(x))) if x.sum() > 0 else x

def net():
    return Net()

def branchy():
    return Branchy()
"""


def _factory_file(workdir: Path, name: str) -> Path:
    torch.manual_seed(0)
    tensors = {
        "a.weight": torch.randn(24, 8), "a.bias": torch.randn(24),
        "b.weight": torch.randn(3, 24), "b.bias": torch.randn(3),
    }  # fmt: skip
    return write_weights(workdir / name, tensors)


def test_user_module_round_trip_through_the_stored_shapes(
    cli, workdir: Path, fresh_module_name
) -> None:
    mod = fresh_module_name("net", FACTORY)
    source = _factory_file(workdir, "net.safetensors")
    result = cli("prune", source, "--arch", f"{mod}:net", "-m", "magnitude", "--granularity",
                 "neuron", "-s", "0.5", "-o", "slim.safetensors", "--input-shape", "8", "-q")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    tensors = load_file(workdir / "slim.safetensors")
    assert tensors["a.weight"].shape[0] == tensors["b.weight"].shape[1] < 24
    inspected = cli("inspect", "slim.safetensors", "--arch", f"{mod}:net", "--json")
    assert inspected.exit_code == 0, inspected.stderr


@pytest.mark.parametrize(
    ("extra", "code", "fragment"),
    [
        (("--granularity", "head"), 3, "attention"),
        (("--granularity", "chanel"), 2, "unknown --granularity"),
        (("--granularity", "channel", "--round-to", "0"), 2, "--round-to must be a positive"),
        (("--granularity", "channel", "-s", "0.999"), 2, "would remove whole layers"),
        (("--granularity", "channel", "--reconstruct"), 2, "give --data"),
        (("--granularity", "channel", "--pattern", "2:4"), 2, "--pattern"),
        (("--granularity", "channel", "-m", "imp", "--data", "digits"), 3, "one-shot"),
        (("--granularity", "channel", "--format", "bitmask"), 2, "drop --format"),
    ],
)
def test_bad_structured_options_are_refused(cli, workdir: Path, extra, code, fragment) -> None:  # noqa: ANN001
    write_zoo(workdir / "l.safetensors", "lenet5")
    args = (
        "prune",
        "l.safetensors",
        "-s",
        "0.5",
        "-m",
        "magnitude",
        *extra,
        "-o",
        "out.safetensors",
    )
    if "-m" in extra:
        args = ("prune", "l.safetensors", "-s", "0.5", *extra, "-o", "out.safetensors")
    run_refused(cli, workdir, args, code, fragment)


def test_weights_only_and_untraceable_models_are_refused(
    cli, workdir: Path, fresh_module_name
) -> None:
    _factory_file(workdir, "w.safetensors")
    base = ("prune", "w.safetensors", "-m", "magnitude", "--granularity", "channel", "-s", "0.5")
    run_refused(cli, workdir, (*base, "-o", "o.safetensors"), 3, "holds weights only", "--arch")
    mod = fresh_module_name("branchy", FACTORY)
    args = (*base, "--arch", f"{mod}:branchy", "--input-shape", "8", "-o", "o.safetensors")
    run_refused(cli, workdir, args, 3, "torch.fx cannot trace", "Branchy")


def test_tampered_structured_files_are_refused(cli, workdir: Path) -> None:
    source = write_zoo(workdir / "l.safetensors", "lenet5")
    assert cli("prune", source, "-m", "magnitude", "--granularity", "channel", "-s", "0.3",
               "-o", "slim.safetensors", "-q").exit_code == 0  # fmt: skip
    tensors = load_file(workdir / "slim.safetensors")
    meta = metadata_of(workdir / "slim.safetensors")
    # a conv's rows cut without its consumer's columns: the widths no longer fit together
    tensors["conv1.weight"] = tensors["conv1.weight"][:2].contiguous()
    tensors["conv1.bias"] = tensors["conv1.bias"][:2].contiguous()
    save_file(tensors, str(workdir / "bad.safetensors"), metadata=meta)
    run_refused(cli, workdir, ("inspect", "bad.safetensors"), 2, "do not fit")
    # a layer bigger than the architecture's
    tensors = load_file(workdir / "slim.safetensors")
    tensors["conv1.bias"] = torch.zeros(60)
    save_file(tensors, str(workdir / "big.safetensors"), metadata=meta)
    run_refused(cli, workdir, ("inspect", "big.safetensors"), 2, "a smaller layer keeps 1 to")


def test_smaller_model_exports_to_onnx_with_its_smaller_graph(cli, workdir: Path) -> None:
    import onnx

    source = write_zoo(workdir / "l.safetensors", "lenet5")
    assert cli("prune", source, "-m", "magnitude", "--granularity", "channel", "-s", "0.5",
               "-o", "slim.safetensors", "-q").exit_code == 0  # fmt: skip
    result = cli("export", "slim.safetensors", "--to", "onnx", "-o", "slim.onnx", "--json")
    assert result.exit_code == 0, result.stderr
    checks = {c["name"]: c["passed"] for c in report_of(result)["checks"]}
    assert checks["parity"] is True
    graph = onnx.load(str(workdir / "slim.onnx")).graph
    stored = load_file(workdir / "slim.safetensors")
    shapes = {tuple(i.dims) for i in graph.initializer}
    assert {tuple(stored[n].shape) for n in ("conv2.weight", "fc1.weight", "fc2.weight")} <= shapes
    assert stored["fc1.weight"].shape[0] < 120 or stored["conv2.weight"].shape[0] < 16


def test_dry_run_lists_the_groups_and_writes_nothing(cli, workdir: Path) -> None:
    write_zoo(workdir / "r.safetensors", "resnet20")
    result = cli("prune", "r.safetensors", "-m", "magnitude", "--granularity", "channel", "-s", "0.5",
                 "--dry-run", "--json", "-o", "out.safetensors")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["granularity"] == "channel" and len(plan["groups"]) == 12
    assert sorted(g["size"] for g in plan["groups"]) == [16] * 4 + [32] * 4 + [64] * 4
    assert not (workdir / "out.safetensors").exists()


def test_erk_scope_prunes_the_wide_layers_harder(cli, workdir: Path) -> None:
    write_zoo(workdir / "l.safetensors", "lenet5")
    result = cli("prune", "l.safetensors", "-m", "magnitude", "--granularity", "channel", "-s", "0.4",
                 "--scope", "erk", "-o", "out.safetensors", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    kept = {g["name"]: g["after"] / g["before"] for g in report["structure"]["groups"]}
    assert kept["fc1"] < kept["conv1"]  # fc1 (120 × 400) holds far more per unit than conv1
    assert abs(report["pruning"]["achieved_sparsity"] - 0.4) < 0.02


def test_a_stored_layer_of_width_zero_is_refused(cli, workdir: Path) -> None:
    source = write_zoo(workdir / "l.safetensors", "lenet5")
    assert cli("prune", source, "-m", "magnitude", "--granularity", "channel", "-s", "0.3",
               "-o", "slim.safetensors", "-q").exit_code == 0  # fmt: skip
    tensors = load_file(workdir / "slim.safetensors")
    tensors["fc2.weight"] = torch.zeros(0, tensors["fc2.weight"].shape[1])
    tensors["fc2.bias"] = torch.zeros(0)
    save_file(
        tensors,
        str(workdir / "zero.safetensors"),
        metadata=metadata_of(workdir / "slim.safetensors"),
    )
    run_refused(cli, workdir, ("inspect", "zero.safetensors"), 2, "a smaller layer keeps 1 to")
