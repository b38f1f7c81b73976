"""The user stories of the CLI, run as a user runs them: exit code, JSON report, file written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    SMALL_MLP,
    files_in,
    metadata_of,
    pipe_prune_into_inspect,
    report_of,
    write_weights,
    write_zoo,
    zeros,
)
from safetensors.torch import load, load_file

import prunecli
from prunecli.errors import Unsupported
from prunecli.models.loaded import load_model

MLP_WEIGHTS = ["fc1.weight", "fc2.weight", "fc3.weight"]
MLP_BIASES = ["fc1.bias", "fc2.bias", "fc3.bias"]


# --- version, methods, init -------------------------------------------------------------------


def test_version_in_process(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"prunecli {prunecli.__version__}"


def test_version_as_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "prunecli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"prunecli {prunecli.__version__}"


def test_help_prose_wraps_to_the_terminal(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    # the docstring's line breaks are the source's, not the reader's: prose is joined, examples kept
    monkeypatch.setenv("COLUMNS", "200")
    result = cli("prune", "--help")
    assert result.exit_code == 0
    assert "-o - writes it to stdout (the report then goes to stderr)." in result.stdout
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "prunecli prune model.safetensors --method magnitude --sparsity 0.9" in lines


@pytest.mark.parametrize(
    "command", ["inspect", "score", "prune", "retrain", "export", "methods", "init"]
)
def test_help_examples_stay_indented(cli, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = cli(command, "--help")
    assert result.exit_code == 0
    examples = [line for line in result.stdout.splitlines() if line.strip().startswith("prunecli ")]
    assert examples and all(line.startswith("   prunecli ") for line in examples), examples


@pytest.mark.parametrize("columns", [80, 160])
def test_methods_lists_every_method_whole(
    cli, monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    from prunecli.criteria import list_criteria

    monkeypatch.setenv("COLUMNS", str(columns))
    result = cli("methods")
    assert result.exit_code == 0
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    for criterion in list_criteria():
        # the name unbroken at the start of its row, with what it needs
        (row,) = [line for line in lines if line.strip("│ ").startswith(criterion.name + " ")]
        if columns >= 120:
            assert ", ".join(criterion.needs) in row
        else:
            assert f"needs {', '.join(criterion.needs)};" in row
    assert ("┃ method" in result.stdout) == (columns >= 120)


def test_methods_json(cli) -> None:
    result = cli("methods", "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["schema"] == "prunecli.methods/1"
    by_name = {m["name"]: m for m in document["methods"]}
    assert {"magnitude", "random"} <= set(by_name)
    assert by_name["magnitude"]["needs"] == ["weights"]
    assert by_name["random"]["default_iterations"] == 1
    assert by_name["magnitude"]["default_scope"] == "global"
    assert all(m["summary"] for m in document["methods"])


def test_init_vgg16(cli, workdir: Path) -> None:
    result = cli("init", "vgg16", "-o", "vgg16-init.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["command"] == "init"
    assert report["model"]["arch"] == "vgg16"
    assert report["model"]["input_shape"] == [3, 32, 32]
    assert report["totals"]["sparsity"] == 0.0
    path = workdir / "vgg16-init.safetensors"
    meta = metadata_of(path)
    assert meta["prunecli.arch"] == "vgg16"
    assert meta["format"] == "pt"
    assert meta["prunecli.version"] == prunecli.__version__
    tensors = load_file(path)
    assert report["totals"]["all_params"] == sum(t.numel() for t in tensors.values())
    # 13 conv layers and the classifier are the prunable weights
    assert len(report["layers"]) == 14
    assert files_in(workdir) == {"vgg16-init.safetensors"}


def test_init_default_name_and_seed(cli, workdir: Path) -> None:
    kwargs = json.dumps(SMALL_MLP)
    assert cli("init", "mlp", "--arch-kwargs", kwargs, "-q").exit_code == 0
    first = (workdir / "mlp.safetensors").read_bytes()
    meta = metadata_of(workdir / "mlp.safetensors")
    assert meta["prunecli.arch"] == "mlp"
    assert json.loads(meta["prunecli.arch_kwargs"]) == SMALL_MLP
    assert cli("init", "mlp", "--arch-kwargs", kwargs, "-o", "b.safetensors", "-q").exit_code == 0
    assert (workdir / "b.safetensors").read_bytes() == first  # same seed, same bytes
    args = ("init", "mlp", "--arch-kwargs", kwargs, "--seed", "1", "-o", "c.safetensors", "-q")
    assert cli(*args).exit_code == 0
    assert not torch.equal(
        load_file(workdir / "c.safetensors")["fc1.weight"],
        load_file(workdir / "b.safetensors")["fc1.weight"],
    )


# --- inspect --------------------------------------------------------------------------------


def test_inspect_human(cli, mlp_file: Path) -> None:
    result = cli("inspect", mlp_file)
    assert result.exit_code == 0, result.stderr
    for text in ("fc1.weight", "16×12", "total", "mlp", "352"):
        assert text in result.stdout
    assert "fc1.bias" not in result.stdout  # biases are not prunable
    assert result.stderr == ""


def test_inspect_at_80_columns_keeps_each_layer_on_one_line(
    cli, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a CI log is 80 columns wide: the narrow table drops params, bars and the outer border
    monkeypatch.setenv("COLUMNS", "80")
    model = write_zoo(workdir / "vgg.safetensors", "vgg16")
    result = cli("inspect", model)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    convs = [name for name, tensor in load_file(model).items() if tensor.dim() == 4]
    assert "features.10.weight" in convs
    for name in convs:
        assert sum(name in line for line in lines) == 1, name
    assert "params" not in result.stdout


def test_inspect_json(cli, mlp_file: Path) -> None:
    result = cli("inspect", mlp_file, "--json")
    assert result.exit_code == 0
    report = report_of(result)
    assert report["command"] == "inspect"
    assert report["model"]["arch"] == "mlp"
    assert report["model"]["arch_kwargs"] == SMALL_MLP
    assert [layer["name"] for layer in report["layers"]] == MLP_WEIGHTS
    assert report["layers"][0]["shape"] == [16, 12]
    assert report["totals"]["prunable_params"] == 352
    assert report["totals"]["all_params"] == 352 + 16 + 8 + 4
    assert report["checks"] == []


def test_inspect_all_lists_every_tensor(cli, mlp_file: Path) -> None:
    report = report_of(cli("inspect", mlp_file, "--all", "--json"))
    assert {layer["name"] for layer in report["layers"]} == set(MLP_WEIGHTS + MLP_BIASES)


def test_inspect_quiet_prints_nothing(cli, mlp_file: Path) -> None:
    result = cli("inspect", mlp_file, "-q")
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""


@pytest.fixture
def pruned90(cli, mlp_file: Path) -> Path:
    out = mlp_file.with_name("p90.safetensors")
    result = cli("prune", mlp_file, "--method", "magnitude", "--sparsity", "0.9", "-o", out, "-q")
    assert result.exit_code == 0, result.stderr
    return out


def test_inspect_gate_passes(cli, pruned90: Path) -> None:
    result = cli("inspect", pruned90, "--min-sparsity", "0.9", "--json")
    assert result.exit_code == 0, result.stderr
    (check,) = report_of(result)["checks"]
    assert check["name"] == "min-sparsity" and check["passed"] is True
    assert cli("inspect", pruned90, "--min-sparsity", "85%", "-q").exit_code == 0


def test_inspect_gate_fails_with_one_line(cli, mlp_file: Path, pruned90: Path) -> None:
    result = cli("inspect", mlp_file, "--min-sparsity", "0.9")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "below" in lines[0] and "90" in lines[0]
    result = cli("inspect", pruned90, "--min-sparsity", "0.95", "--json")
    assert result.exit_code == 1
    (check,) = report_of(result)["checks"]
    assert check["passed"] is False and check["threshold"] == 0.95


@pytest.mark.parametrize("suffix", [".json", ".md", ".svg", ".html"])
def test_inspect_report_files(cli, pruned90: Path, suffix: str) -> None:
    target = pruned90.with_name(f"x{suffix}")
    result = cli("inspect", pruned90, "--report", target, "-q")
    assert result.exit_code == 0, result.stderr
    text = target.read_text()
    if suffix == ".json":
        document = json.loads(text)
        assert document["schema"] == "prunecli.report/1"
        assert document["totals"]["prunable_nonzero"] == 352 - round(0.9 * 352)
    elif suffix == ".md":
        assert "| layer |" in text and "fc1.weight" in text
    elif suffix == ".svg":
        assert text.lstrip().startswith("<svg") and "fc1.weight" in text
    else:
        assert "<html" in text.lower() and "fc1.weight" in text
    # an existing report is replaced only with --force, as every output is
    assert cli("inspect", pruned90, "--report", target, "-q").exit_code == 2
    assert cli("inspect", pruned90, "--report", target, "-q", "--force").exit_code == 0


# --- score and prune ------------------------------------------------------------------------


def test_score_magnitude(cli, mlp_file: Path) -> None:
    out = mlp_file.with_name("scores.safetensors")
    result = cli("score", mlp_file, "--method", "magnitude", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["command"] == "score"
    assert report["output"]["kind"] == "scores"
    scores = load_file(out)
    weights = load_file(mlp_file)
    assert list(scores) == MLP_WEIGHTS
    for name in MLP_WEIGHTS:
        assert torch.equal(scores[name], weights[name].abs())
    meta = metadata_of(out)
    assert meta["prunecli.kind"] == "scores"
    assert meta["prunecli.method"] == "magnitude"


def test_score_default_output_name(cli, mlp_file: Path) -> None:
    assert cli("score", mlp_file, "-m", "random", "-q").exit_code == 0
    assert (mlp_file.parent / "model.scores.safetensors").is_file()


def test_prune_magnitude_default_output(cli, workdir: Path) -> None:
    folder = workdir / "models"
    folder.mkdir()
    source = write_zoo(folder / "model.safetensors", "mlp", SMALL_MLP)
    before = load_file(source)
    result = cli(
        "prune", "models/model.safetensors", "--method", "magnitude", "--sparsity", "0.9", "--json"
    )
    assert result.exit_code == 0, result.stderr
    out = folder / "model.pruned.safetensors"  # beside the input, not in the current folder
    assert out.is_file()
    assert files_in(workdir) == {
        "models",
        "models/model.safetensors",
        "models/model.pruned.safetensors",
    }

    report = report_of(result)
    assert report["command"] == "prune"
    assert report["pruning"]["method"] == "magnitude"
    assert report["pruning"]["target_sparsity"] == 0.9
    assert report["pruning"]["scope"] == "global"
    assert report["output"]["path"] == str(Path("models/model.pruned.safetensors"))
    assert report["output"]["file_bytes"] == out.stat().st_size
    n_zero = round(0.9 * 352)
    assert report["totals"]["prunable_nonzero"] == 352 - n_zero
    assert report["pruning"]["achieved_sparsity"] == n_zero / 352

    after = load_file(out)
    assert list(after) == list(before)  # every tensor kept, in order
    assert sum(zeros(after[name]) for name in MLP_WEIGHTS) == n_zero
    for name in MLP_BIASES:
        assert torch.equal(after[name], before[name])  # biases are never pruned
    # global magnitude: every survivor is at least as large as every pruned weight
    kept = torch.cat([after[n][after[n] != 0].abs() for n in MLP_WEIGHTS])
    cut = torch.cat([before[n][after[n] == 0].abs() for n in MLP_WEIGHTS])
    assert kept.min() >= cut.max()
    for name in MLP_WEIGHTS:  # survivors keep their exact values
        mask = after[name] != 0
        assert torch.equal(after[name][mask], before[name][mask])

    meta = metadata_of(out)
    assert meta["format"] == "pt"
    assert meta["prunecli.arch"] == "mlp"
    assert json.loads(meta["prunecli.arch_kwargs"]) == SMALL_MLP
    assert meta["prunecli.method"] == "magnitude"
    assert float(meta["prunecli.sparsity.target"]) == 0.9
    assert float(meta["prunecli.sparsity.achieved"]) == n_zero / 352
    assert meta["prunecli.seed"] == "0"
    assert meta["prunecli.version"] == prunecli.__version__
    assert source.read_bytes() == (folder / "model.safetensors").read_bytes()


def test_prune_human_report(cli, mlp_file: Path) -> None:
    result = cli("prune", mlp_file, "-m", "magnitude", "-s", "50%", "-o", "h.safetensors")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.replace("\n", " ")  # the 80-column console may wrap a line
    # the time is the pruning's, so it sits on the "pruned by" line, not on "wrote"
    assert re.search(r"pruned by magnitude \(global, 1 round, seed 0\) in \d+\.\d\d s: ", lines)
    assert re.search(r"wrote h\.safetensors \([\d.]+ kB\)$", result.stdout.strip())


def random_erk(cli, source: Path, seed: int, out: Path) -> dict[str, torch.Tensor]:
    args = ("prune", source, "--method", "random", "--sparsity", "90%", "--scope", "erk")
    result = cli(*args, "--seed", seed, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["pruning"]["scope"] == "erk" and report["pruning"]["seed"] == seed
    return load_file(out)


def test_prune_random_erk_seeded(cli, workdir: Path) -> None:
    source = write_zoo(workdir / "m.safetensors", "mlp", {"widths": [30, 40, 20, 10]})
    total = 30 * 40 + 40 * 20 + 20 * 10
    a = random_erk(cli, source, 3, workdir / "a.safetensors")
    b = random_erk(cli, source, 3, workdir / "b.safetensors")
    c = random_erk(cli, source, 4, workdir / "c.safetensors")
    for name in a:  # same seed: bit-identical tensors
        assert a[name].numpy().tobytes() == b[name].numpy().tobytes()
    assert sum(zeros(a[name]) for name in MLP_WEIGHTS) == round(0.9 * total)
    assert sum(zeros(c[name]) for name in MLP_WEIGHTS) == round(0.9 * total)
    assert any(not torch.equal(a[n] != 0, c[n] != 0) for n in MLP_WEIGHTS)  # seed changes masks
    # ERK: the smallest layer (fewest weights per fan) stays densest
    density = {n: 1 - zeros(a[n]) / a[n].numel() for n in MLP_WEIGHTS}
    assert density["fc3.weight"] > density["fc1.weight"]
    assert metadata_of(workdir / "a.safetensors")["prunecli.scope"] == "erk"


def test_prune_from_scores_layer_scope(cli, workdir: Path) -> None:
    # odd sizes, so per-layer budgets need rounding: fc1 13×7 = 91, fc2 5×13 = 65
    source = write_zoo(workdir / "m.safetensors", "mlp", {"widths": [7, 13, 5]})
    assert cli("score", source, "-m", "magnitude", "-o", "scores.safetensors", "-q").exit_code == 0
    args = ("prune", source, "--sparsity", "0.5", "--scope", "layer")
    result = cli(*args, "--scores", "scores.safetensors", "-o", "from-scores.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["pruning"]["method"] == "scores"
    from_scores = load_file(workdir / "from-scores.safetensors")
    assert cli(*args, "--method", "magnitude", "-o", "direct.safetensors", "-q").exit_code == 0
    direct = load_file(workdir / "direct.safetensors")
    names = ["fc1.weight", "fc2.weight"]
    for name in names:
        assert torch.equal(from_scores[name] != 0, direct[name] != 0)
        n = from_scores[name].numel()
        assert abs(zeros(from_scores[name]) - 0.5 * n) < 1  # each layer at S, rounded
    assert sum(zeros(from_scores[n]) for n in names) == round(0.5 * (91 + 65))


def test_prune_to_stdout_in_process(cli, mlp_file: Path) -> None:
    result = cli("prune", mlp_file, "-m", "magnitude", "-s", "0.9", "-o", "-", "--json")
    assert result.exit_code == 0, result.stderr
    tensors = load(result.stdout_bytes)  # stdout holds exactly the model
    assert sum(zeros(tensors[n]) for n in MLP_WEIGHTS) == round(0.9 * 352)
    report = report_of(result, "stderr")  # and the report moved to stderr
    assert report["output"]["path"] == "-"
    assert files_in(mlp_file.parent) == {"model.safetensors"}


def test_prune_from_stdin_in_process(cli, mlp_file: Path) -> None:
    result = cli("prune", "-", "-m", "magnitude", "-s", "0.5", "-q", input=mlp_file.read_bytes())
    assert result.exit_code == 0, result.stderr
    tensors = load(result.stdout_bytes)  # stdin input: stdout output by default
    assert sum(zeros(tensors[n]) for n in MLP_WEIGHTS) == 176


def test_pipe_prune_into_inspect(mlp_file: Path) -> None:
    """The real pipe: `python -m prunecli prune ... -o - | python -m prunecli inspect - --json`."""
    report = pipe_prune_into_inspect(mlp_file, "--method", "magnitude", "--sparsity", "0.9")
    assert report["schema"] == "prunecli.report/1"
    assert report["model"]["path"] == "-"
    assert report["model"]["arch"] == "mlp"  # the metadata travelled through the pipe
    assert report["totals"]["prunable_nonzero"] == 352 - round(0.9 * 352)
    assert files_in(mlp_file.parent) == {"model.safetensors"}


def test_prune_sparsity_zero_keeps_everything(cli, mlp_file: Path) -> None:
    assert (
        cli("prune", mlp_file, "-m", "magnitude", "-s", "0", "-o", "z.safetensors", "-q").exit_code
        == 0
    )
    assert load_file(mlp_file.with_name("z.safetensors")).keys() == load_file(mlp_file).keys()
    assert all(zeros(t) == 0 for t in load_file(mlp_file.with_name("z.safetensors")).values())


def test_prune_iterations(cli, mlp_file: Path) -> None:
    args = ("prune", mlp_file, "-m", "magnitude", "-s", "0.8", "--iterations", "3")
    result = cli(*args, "-o", "it.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    assert report_of(result)["pruning"]["iterations"] == 3
    tensors = load_file(mlp_file.with_name("it.safetensors"))
    assert sum(zeros(tensors[n]) for n in MLP_WEIGHTS) == round(0.8 * 352)


def test_force_replaces_existing_output(cli, mlp_file: Path) -> None:
    out = mlp_file.with_name("o.safetensors")
    out.write_bytes(b"old")
    result = cli("prune", mlp_file, "-m", "magnitude", "-s", "0.5", "-o", out, "--force", "-q")
    assert result.exit_code == 0, result.stderr
    assert sum(zeros(t) for n, t in load_file(out).items() if n in MLP_WEIGHTS) == 176
    assert files_in(mlp_file.parent) == {"model.safetensors", "o.safetensors"}


def test_prune_report_file(cli, mlp_file: Path) -> None:
    args = ("prune", mlp_file, "-m", "magnitude", "-s", "0.5", "-o", "o.safetensors")
    assert cli(*args, "--report", "o.json", "-q").exit_code == 0
    document = json.loads(mlp_file.with_name("o.json").read_text())
    assert document["schema"] == "prunecli.report/1"
    assert document["pruning"]["method"] == "magnitude"


# --- dtypes, architectures, selection -----------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_preserved(cli, workdir: Path, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    tensors = {
        "encoder.weight": torch.randn(10, 6).to(dtype),
        "encoder.bias": torch.randn(10).to(dtype),
        "head.weight": torch.randn(3, 10).to(dtype),
    }
    source = write_weights(workdir / "half.safetensors", tensors)
    result = cli("prune", source, "-m", "magnitude", "-s", "0.7", "-o", "out.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["model"]["arch"] is None  # weights only
    assert {layer["dtype"] for layer in report["layers"]} == {str(dtype).removeprefix("torch.")}
    out = load_file(workdir / "out.safetensors")
    assert {t.dtype for t in out.values()} == {dtype}
    assert zeros(out["encoder.weight"]) + zeros(out["head.weight"]) == round(0.7 * 90)
    assert torch.equal(out["encoder.bias"], tensors["encoder.bias"])
    for name in ("encoder.weight", "head.weight"):
        mask = out[name] != 0
        assert torch.equal(out[name][mask], tensors[name][mask])


def test_arch_zoo_name_on_weights_only_file(cli, workdir: Path) -> None:
    built = write_zoo(workdir / "tmp.safetensors", "mlp", SMALL_MLP)
    source = write_weights(workdir / "plain.safetensors", load_file(built))  # metadata dropped
    built.unlink()
    assert report_of(cli("inspect", source, "--json"))["model"]["arch"] is None
    kwargs = json.dumps(SMALL_MLP)
    result = cli("inspect", source, "--arch", "mlp", "--arch-kwargs", kwargs, "--json")
    assert result.exit_code == 0, result.stderr
    assert report_of(result)["model"]["arch"] == "mlp"
    args = ("prune", source, "--arch", "mlp", "--arch-kwargs", kwargs, "-m", "magnitude")
    assert cli(*args, "-s", "0.5", "-o", "out.safetensors", "-q").exit_code == 0
    meta = metadata_of(workdir / "out.safetensors")
    assert meta["prunecli.arch"] == "mlp"
    assert json.loads(meta["prunecli.arch_kwargs"]) == SMALL_MLP


USER_ARCH = """
import torch

def make(hidden=8):
    return torch.nn.Sequential(
        torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
    )
"""


def test_arch_import_path(cli, workdir: Path, fresh_module_name) -> None:
    module_name = fresh_module_name("userarch", USER_ARCH)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    source = write_weights(workdir / "user.safetensors", dict(net.state_dict()))
    spec = f"{module_name}:make"
    args = ("prune", source, "--arch", spec, "--arch-kwargs", '{"hidden": 6}', "-m", "magnitude")
    result = cli(*args, "-s", "0.5", "-o", "out.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["model"]["arch"] == spec
    assert [layer["name"] for layer in report["layers"]] == ["0.weight", "2.weight"]
    out = load_file(workdir / "out.safetensors")
    assert zeros(out["0.weight"]) + zeros(out["2.weight"]) == 18
    assert metadata_of(workdir / "out.safetensors")["prunecli.arch"] == spec


SENTINEL_ARCH = """
from pathlib import Path
Path({sentinel!r}).write_text("imported")

def make():
    raise AssertionError("never called")
"""


def test_import_path_in_metadata_is_not_imported(cli, workdir: Path, fresh_module_name) -> None:
    sentinel = workdir / "pymods" / "IMPORTED"
    module_name = fresh_module_name("evil", SENTINEL_ARCH.format(sentinel=str(sentinel)))
    spec = f"{module_name}:make"
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    source = write_weights(
        workdir / "m.safetensors", dict(net.state_dict()), {"prunecli.arch": spec}
    )
    result = cli("inspect", source, "--json")
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["model"]["arch"] is None  # weights-only mode
    assert [layer["name"] for layer in report["layers"]] == ["0.weight", "2.weight"]
    assert (
        cli("prune", source, "-m", "magnitude", "-s", "0.5", "-o", "o.safetensors", "-q").exit_code
        == 0
    )
    assert not sentinel.exists()

    with pytest.raises(Unsupported) as caught:
        load_model(str(source)).require_graph("synflow")
    assert f"--arch {spec}" in str(caught.value)
    assert caught.value.exit_code == 3
    assert not sentinel.exists()


def test_include_exclude(cli, mlp_file: Path) -> None:
    before = load_file(mlp_file)
    args = ("prune", mlp_file, "-m", "magnitude", "-s", "0.5")
    result = cli(*args, "--exclude", "fc2.*", "-o", "ex.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    assert [layer["name"] for layer in report_of(result)["layers"]] == ["fc1.weight", "fc3.weight"]
    out = load_file(mlp_file.with_name("ex.safetensors"))
    assert torch.equal(out["fc2.weight"], before["fc2.weight"])
    assert zeros(out["fc1.weight"]) + zeros(out["fc3.weight"]) == round(0.5 * (192 + 32))
    assert "fc2.weight" not in json.loads(
        metadata_of(mlp_file.with_name("ex.safetensors"))["prunecli.prunable"]
    )

    result = cli(*args, "--include", r"re:fc[13]\.weight", "-o", "re.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    assert [layer["name"] for layer in report_of(result)["layers"]] == ["fc1.weight", "fc3.weight"]

    result = cli(
        *args, "--include", "fc*", "--exclude", "re:fc1", "-o", "both.safetensors", "--json"
    )
    assert result.exit_code == 0, result.stderr
    # include globs only reach prunable candidates (2+ dims): biases are never selected
    assert [layer["name"] for layer in report_of(result)["layers"]] == ["fc2.weight", "fc3.weight"]
    out = load_file(mlp_file.with_name("both.safetensors"))
    assert torch.equal(out["fc1.weight"], before["fc1.weight"])


def test_existing_zeros_stay_pruned(cli, workdir: Path) -> None:
    torch.manual_seed(0)
    weight = torch.randn(20, 10)
    weight[:, :4] = 0  # 80 of 200 already pruned (40%)
    tensors = {
        "layer.weight": weight,
        "layer.bias": torch.randn(20),
        "out.weight": torch.randn(5, 20),
    }
    source = write_weights(workdir / "z.safetensors", tensors)
    total = 300
    result = cli(
        "prune", source, "-m", "random", "-s", "0.5", "--seed", "7", "-o", "r.safetensors", "--json"
    )
    assert result.exit_code == 0, result.stderr
    out = load_file(workdir / "r.safetensors")
    assert bool((out["layer.weight"][:, :4] == 0).all())
    assert zeros(out["layer.weight"]) + zeros(out["out.weight"]) == round(0.5 * total)
    assert report_of(result)["warnings"] == []

    # asking for less than is already zero: nothing revives, and the report says so
    result = cli("prune", source, "-m", "magnitude", "-s", "0.1", "-o", "m.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    out = load_file(workdir / "m.safetensors")
    assert zeros(out["layer.weight"]) + zeros(out["out.weight"]) == 80
    assert torch.equal(out["layer.weight"], weight)
    report = report_of(result)
    assert report["pruning"]["achieved_sparsity"] == pytest.approx(80 / total)
    assert any("revives" in w for w in report["warnings"])


# --- .pt2 programs -------------------------------------------------------------------------


@pytest.fixture
def pt2_file(workdir: Path) -> Path:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 3))
    program = torch.export.export(net.eval(), (torch.randn(2, 6),))
    path = workdir / "net.pt2"
    torch.export.save(program, str(path))
    return path


def test_pt2_to_safetensors(cli, pt2_file: Path) -> None:
    result = cli(
        "prune", pt2_file, "-m", "magnitude", "-s", "0.5", "-o", "net.safetensors", "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = report_of(result)
    assert report["model"]["format"] == "pt2"
    assert [layer["name"] for layer in report["layers"]] == ["0.weight", "2.weight"]
    out = load_file(pt2_file.with_name("net.safetensors"))
    assert zeros(out["0.weight"]) + zeros(out["2.weight"]) == 45
    assert zeros(out["0.bias"]) == 0


def test_pt2_to_pt2(cli, pt2_file: Path) -> None:
    out = pt2_file.with_name("pruned.pt2")
    result = cli("prune", pt2_file, "-m", "magnitude", "-s", "0.5", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert report_of(result)["output"]["format"] == "pt2"
    program = torch.export.load(str(out))
    state = program.state_dict
    assert zeros(state["0.weight"]) + zeros(state["2.weight"]) == 45
    assert zeros(state["0.bias"]) == 0
    original = torch.export.load(str(pt2_file)).state_dict
    assert state["0.weight"].requires_grad == original["0.weight"].requires_grad
    # the program runs with the pruned weights: same output as a hand-masked copy
    net = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 3))
    net.load_state_dict({k: v.detach() for k, v in state.items()})
    x = torch.randn(2, 6)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), net(x))
    # and prunecli reads it back
    report = report_of(cli("inspect", out, "--json"))
    assert report["totals"]["sparsity"] == 0.5
    assert files_in(pt2_file.parent) == {"net.pt2", "pruned.pt2"}
