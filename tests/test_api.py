"""The Python API (prunecli.prune, score, inspect): the CLI's zeros, scores, reports and errors,
on a live module, a dict of tensors or a path; and docs/python.md's examples, run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import prunecli
from prunecli.errors import BadInput, PrunecliError, Unsupported
from prunecli.models.zoo import build_arch
from tests.conftest import SMALL_MLP, report_of, write_weights, write_zoo

ROOT = Path(__file__).resolve().parent.parent
INPUT_SHAPE = (12,)  # SMALL_MLP's input


def module_of(path: Path) -> torch.nn.Module:
    """The zoo MLP holding the weights of ``path``, in train mode (as a user's would be)."""
    module = build_arch("mlp", SMALL_MLP).module
    module.load_state_dict(load_file(str(path)))
    return module.train()


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def assert_same_tensors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)  # safetensors files list their tensors sorted
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def same_report(api: dict, cli: dict) -> None:
    """What was pruned and how: the layers, totals, topology and pruning record agree."""
    for key in ("layers", "totals", "topology", "pruning", "warnings"):
        assert api[key] == cli[key], key


def cli_message(result) -> str:
    """The message of a refused command, without the ``prunecli: error:`` prefix and hint."""
    assert result.exit_code != 0, result.stdout
    return result.stderr.splitlines()[0].removeprefix("prunecli: error: ")


CASES = {
    "magnitude": ("magnitude", (), {}),
    "random-erk": ("random", ("--scope", "erk", "--seed", "3"), {"scope": "erk", "seed": 3}),
    "magnitude-layer-3-rounds": (
        "magnitude",
        ("--scope", "layer", "--iterations", "3"),
        {"scope": "layer", "iterations": 3},
    ),
    "synflow": ("synflow", (), {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_prune_in_place_gives_the_cli_zeros(cli, workdir: Path, case: str) -> None:
    method, flags, keywords = CASES[case]
    path = write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP, seed=1)
    result = cli(
        "prune", path, "--method", method, "--sparsity", "0.7", *flags, "-o", "out.safetensors"
    )
    assert result.exit_code == 0, result.stderr
    result = cli("prune", path, "--method", method, "-s", "0.7", *flags, "--json", "-o", "again")
    expected = report_of(result)

    module = module_of(path)
    report = prunecli.prune(module, method, 0.7, input_shape=INPUT_SHAPE, **keywords)

    assert_same_tensors(weights(module), load_file("out.safetensors"))
    same_report(report.to_json(), expected)
    assert module.training and all(sub.training for sub in module.modules())


def test_report_sparsity_is_the_counted_zeros(workdir: Path) -> None:
    module = module_of(write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP))
    report = prunecli.prune(module, "random", "85%", scope="erk", seed=5)
    prunable = [m.weight for m in module.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in prunable)
    total = sum(w.numel() for w in prunable)
    assert total == 352 and zeros == round(0.85 * 352)
    assert report.prunable_params - report.prunable_nonzero == zeros
    assert report.pruning["achieved_sparsity"] == zeros / total
    assert report.sparsity == pytest.approx(zeros / total, abs=1e-15)  # 1 - nonzero / total
    assert [layer.nonzero for layer in report.layers] == [int(w.count_nonzero()) for w in prunable]


def test_inplace_false_leaves_the_original_untouched(workdir: Path) -> None:
    module = module_of(write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP))
    before = weights(module)
    copy, report = prunecli.prune(module, "magnitude", 0.5, inplace=False)
    assert_same_tensors(weights(module), before)
    assert copy is not module and isinstance(copy, torch.nn.Module)
    zeros = sum(int((t == 0).sum()) for name, t in copy.state_dict().items() if "weight" in name)
    assert zeros == round(0.5 * 352) == report.prunable_params - report.prunable_nonzero
    # the copy's weights are what the report counted; the same pruning, in place, agrees
    prunecli.prune(module, "magnitude", 0.5)
    assert_same_tensors(weights(module), weights(copy))


def test_a_dict_of_tensors_is_pruned_like_a_weights_only_file(cli, workdir: Path) -> None:
    torch.manual_seed(0)
    tensors = {
        "a.weight": torch.randn(6, 5),
        "a.bias": torch.randn(6),
        "b.weight": torch.randn(3, 6),
    }
    path = write_weights(workdir / "w.safetensors", tensors)
    result = cli(
        "prune", path, "--method", "magnitude", "--sparsity", "0.6", "-o", "out.safetensors"
    )
    assert result.exit_code == 0, result.stderr
    report = prunecli.prune(tensors, "magnitude", 0.6)  # in place: the dict's own tensors
    assert_same_tensors(tensors, load_file("out.safetensors"))
    assert [layer.name for layer in report.layers] == ["a.weight", "b.weight"]


def test_a_path_is_loaded_and_written_as_the_cli_does(cli, workdir: Path) -> None:
    path = write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP, seed=2)
    args = ("--method", "synflow", "--sparsity", "0.8", "--scope", "layer")
    assert cli("prune", path, *args, "-o", "cli.safetensors").exit_code == 0
    expected = load_file("cli.safetensors")

    module, report = prunecli.prune(path, "synflow", 0.8, scope="layer")  # returned, not written
    assert isinstance(module, torch.nn.Module)
    assert_same_tensors(weights(module), expected)
    assert report.output is None and report.model["path"] == str(path)
    assert_same_tensors(load_file(str(path)), load_file(str(path)))  # the input is not changed

    report = prunecli.prune(str(path), "synflow", 0.8, scope="layer", output="api.safetensors")
    assert_same_tensors(load_file("api.safetensors"), expected)
    assert report.output["path"] == "api.safetensors"

    # an existing output: the CLI's refusal, unless force
    refused = cli("prune", path, *args, "-o", "api.safetensors")
    with pytest.raises(BadInput) as caught:
        prunecli.prune(path, "synflow", 0.8, scope="layer", output="api.safetensors")
    assert caught.value.message == cli_message(refused)
    prunecli.prune(path, "magnitude", 0.1, output="api.safetensors", force=True)
    assert 0.09 < prunecli.inspect("api.safetensors").sparsity < 0.11


def test_a_weights_only_path_returns_tensors(workdir: Path) -> None:
    torch.manual_seed(0)
    path = write_weights(workdir / "w.safetensors", {"fc.weight": torch.randn(8, 8)})
    tensors, report = prunecli.prune(path, "magnitude", 0.25)
    assert isinstance(tensors, dict) and int((tensors["fc.weight"] == 0).sum()) == 16
    assert report.sparsity == 0.25
    with pytest.raises(Unsupported, match="synflow needs the model's architecture"):
        prunecli.prune(path, "synflow", 0.5)


def test_score_gives_the_cli_scores(cli, workdir: Path) -> None:
    path = write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP, seed=3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    np.savez(workdir / "data.npz", x=x, y=y)
    args = ("--method", "snip", "--data", "data.npz", "--batches", "2", "--batch-size", "16")
    result = cli("score", path, *args, "-o", "cli.scores.safetensors", "--json")
    assert result.exit_code == 0, result.stderr
    expected = load_file("cli.scores.safetensors")

    module = module_of(path)
    before = weights(module)
    scores, report = prunecli.score(
        module, "snip", data=(torch.from_numpy(x), torch.from_numpy(y)), batches=2, batch_size=16
    )
    assert_same_tensors(scores, expected)
    assert_same_tensors(weights(module), before)
    assert [layer.name for layer in report.layers] == list(expected)
    assert report.command == "score" and report.output is None

    scores, report = prunecli.score(
        path, "snip", data="data.npz", batches=2, batch_size=16, output="api.scores.safetensors"
    )
    assert_same_tensors(load_file("api.scores.safetensors"), expected)
    assert report.output["kind"] == "scores"

    # scores back into prune, as the CLI's --scores
    assert (
        cli(
            "prune", path, "--scores", "cli.scores.safetensors", "-s", "0.6", "-o", "p.safetensors"
        ).exit_code
        == 0
    )
    module = module_of(path)
    prunecli.prune(module, scores=scores, sparsity=0.6)
    assert_same_tensors(weights(module), load_file("p.safetensors"))


def test_inspect_reports_what_the_cli_reports(cli, workdir: Path) -> None:
    path = write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP)
    assert cli("prune", path, "-m", "magnitude", "-s", "0.9", "-o", "p.safetensors").exit_code == 0
    expected = report_of(cli("inspect", "p.safetensors", "--json", "--all"))
    report = prunecli.inspect("p.safetensors", all_tensors=True)
    assert report.to_json() == expected

    module = module_of(Path("p.safetensors")).train()
    report = prunecli.inspect(module, input_shape=INPUT_SHAPE, min_sparsity=0.95)
    assert (
        report.to_json()["layers"] == report_of(cli("inspect", "p.safetensors", "--json"))["layers"]
    )
    assert [check.passed for check in report.checks] == [False]
    assert module.training


@pytest.mark.parametrize(
    ("keywords", "flags"),
    [
        ({"method": "nope", "sparsity": 0.5}, ("--method", "nope", "--sparsity", "0.5")),
        ({"method": "magnitude", "sparsity": 1.5}, ("--method", "magnitude", "--sparsity", "1.5")),
        (
            {"method": "magnitude", "sparsity": 0.5, "scope": "erk2"},
            ("--method", "magnitude", "--sparsity", "0.5", "--scope", "erk2"),
        ),
        ({"method": "snip", "sparsity": 0.5}, ("--method", "snip", "--sparsity", "0.5")),
        (
            {"method": "magnitude", "sparsity": 0.5, "epochs": 3},
            ("--method", "magnitude", "--sparsity", "0.5", "--epochs", "3"),
        ),
    ],
)
def test_bad_input_raises_the_cli_message(cli, workdir: Path, keywords, flags) -> None:
    path = write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP)
    refused = cli("prune", path, *flags)
    assert refused.exit_code == 2
    module = module_of(path)
    before = weights(module)
    with pytest.raises(BadInput) as caught:
        prunecli.prune(module, **keywords)
    assert caught.value.message == cli_message(refused)
    assert_same_tensors(weights(module), before)


@pytest.mark.parametrize("thing", [42, [torch.zeros(2, 2)], {"w": 3}, None])
def test_what_is_not_a_model_is_refused(thing) -> None:
    with pytest.raises(BadInput, match="is not a model"):
        prunecli.prune(thing, "magnitude", 0.5)
    with pytest.raises(BadInput, match="is not a model"):
        prunecli.inspect(thing)


def test_training_methods_and_unknown_options_are_refused(workdir: Path) -> None:
    module = module_of(write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP))
    with pytest.raises(Unsupported, match="--method imp trains the model") as caught:
        prunecli.prune(module, "imp", 0.5, data="data.npz")
    assert "prunecli prune" in caught.value.hint
    with pytest.raises(BadInput, match="unknown option 'alhpa'") as caught:
        prunecli.prune(module, "npb", 0.5, alhpa=0.1)
    assert caught.value.hint == "did you mean 'alpha'?"
    with pytest.raises(PrunecliError, match="trains the model and has no per-weight score"):
        prunecli.score(module, "iht", data="data.npz")  # as `prunecli score`
    assert not any(int((w == 0).sum()) for w in module.parameters())


def test_importing_prunecli_does_not_import_the_jobs() -> None:
    code = (
        "import sys, prunecli.errors\n"
        "assert not any(m.startswith('prunecli.jobs') for m in sys.modules), sorted(sys.modules)\n"
        "import prunecli\n"
        "assert callable(prunecli.prune) and 'prunecli.api' in sys.modules\n"
        "assert set(prunecli.__all__) >= {'prune', 'score', 'inspect', '__version__'}\n"
        "print(prunecli.__version__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == prunecli.__version__
    with pytest.raises(AttributeError, match="has no attribute 'prnue'"):
        prunecli.prnue  # noqa: B018


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_examples_of_docs_python_md_run(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("sklearn")
    blocks = python_blocks((ROOT / "docs" / "python.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    namespace: dict[str, object] = {"__name__": "docs_python_md"}
    for block in blocks:  # in order, one script: later blocks use what earlier ones made
        exec(compile(block, str(ROOT / "docs" / "python.md"), "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert "synflow:   90.00% sparse" in printed and "magnitude: 90.00% sparse" in printed
    assert "pruned by magnitude (global, 1 round, seed 0)" in printed  # prunecli.show
    assert "half.safetensors" in printed and (workdir / "half.safetensors").is_file()
    assert "synflow copy: accuracy" in printed and "snip at 90%: accuracy" in printed
    model = namespace["model"]
    assert isinstance(model, torch.nn.Module)
    masks = [m.weight_mask for m in model if isinstance(m, torch.nn.Linear)]
    assert sum(int(mask.sum()) for mask in masks) == round(0.1 * (64 * 128 + 128 * 64 + 64 * 10))


def test_save_file_round_trip_of_a_module_output(workdir: Path) -> None:
    """A module written with output= loads back as plain safetensors, zeros and all."""
    module = module_of(write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP))
    report = prunecli.prune(module, "magnitude", 0.75, output="m.safetensors")
    assert_same_tensors(load_file("m.safetensors"), weights(module))
    assert report.output["format"] == "safetensors"
    save_file(weights(module), "copy.safetensors")
    assert prunecli.inspect("copy.safetensors").sparsity == report.sparsity


def test_a_transformers_model_is_pruned_as_its_folder_is(cli, workdir: Path) -> None:
    from tests.conftest import write_llama

    folder = write_llama(workdir / "llama")
    transformers = pytest.importorskip("transformers")
    assert cli("prune", folder, "-m", "magnitude", "-s", "0.5", "-o", "out").exit_code == 0
    expected = load_file(str(workdir / "out" / "model.safetensors"))

    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    report = prunecli.prune(model, "magnitude", 0.5)
    assert_same_tensors(weights(model), expected)
    names = [layer.name for layer in report.layers]
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" not in names
    assert report.model["hf_architecture"] == "LlamaForCausalLM"


# --- the review's findings: one check for the CLI and the API, no raw exceptions -----------


def test_score_of_a_folder_writes_one_scores_file_as_the_cli(cli, workdir: Path) -> None:
    from tests.conftest import write_llama

    folder = write_llama(workdir / "llama")
    result = cli("score", folder, "-m", "magnitude", "-o", "cli.scores.safetensors")
    assert result.exit_code == 0, result.stderr
    scores, report = prunecli.score(folder, "magnitude", output="api.scores.safetensors")
    assert (workdir / "api.scores.safetensors").is_file()
    assert_same_tensors(load_file("api.scores.safetensors"), load_file("cli.scores.safetensors"))
    assert_same_tensors(scores, load_file("cli.scores.safetensors"))
    assert report.output["kind"] == "scores"
    # a pruned folder is still a folder, in both
    refused = cli("prune", folder, "-m", "magnitude", "-s", "0.5", "-o", "p.safetensors")
    with pytest.raises(BadInput) as caught:
        prunecli.prune(folder, "magnitude", 0.5, output="p.safetensors")
    assert caught.value.message == cli_message(refused)
    assert not (workdir / "p.safetensors").exists()


def test_array_data_is_converted_once(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import prunecli.data.labelled as labelled

    calls = []
    convert = labelled.from_arrays
    monkeypatch.setattr(
        labelled, "from_arrays", lambda *a, **k: calls.append(1) or convert(*a, **k)
    )
    module = module_of(write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP))
    x, y = torch.randn(32, 12), torch.randint(0, 4, (32,))
    prunecli.prune(module, "snip", 0.5, data=(x, y), batch_size=16)
    assert len(calls) == 1
    prunecli.score(module, "snip", data=(x, y), batch_size=16)
    assert len(calls) == 2


def test_include_and_exclude_take_a_pattern_a_list_or_none(cli, workdir: Path) -> None:
    from tests.conftest import write_llama

    module = module_of(write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP))
    report = prunecli.prune(module, "magnitude", 0.5, include="fc[12]*", exclude=None)
    assert [layer.name for layer in report.layers] == ["fc1.weight", "fc2.weight"]
    assert int((module.fc3.weight == 0).sum()) == 0
    _, report = prunecli.score(module, "magnitude", include=None, exclude="fc1*")
    assert [layer.name for layer in report.layers] == ["fc2.weight", "fc3.weight"]
    for keywords in ({"include": [1]}, {"exclude": ["fc1*", None]}, {"include": 3}):
        with pytest.raises(BadInput, match="takes glob patterns"):
            prunecli.prune(module, "magnitude", 0.5, **keywords)
        with pytest.raises(BadInput, match="takes glob patterns"):
            prunecli.inspect(module, **keywords)

    folder = write_llama(workdir / "llama")  # streamed, chunk by chunk
    expected = report_of(cli("inspect", folder, "--include", "*q_proj*", "--json"))
    report = prunecli.inspect(folder, include="*q_proj*")
    assert report.to_json()["layers"] == expected["layers"]
    assert [layer.name for layer in report.layers] == ["model.layers.0.self_attn.q_proj.weight"]


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"iterations": "2"}, "--iterations takes a whole number, got '2'"),
        ({"iterations": 2.5}, "--iterations takes a whole number, got 2.5"),
        ({"iterations": True}, "--iterations takes a whole number, got True"),
        ({"seed": 1.0}, "--seed takes a whole number, got 1.0"),
        ({"method": "npb", "alpha": "x"}, "--alpha takes a number, got 'x'"),
        ({"method": "npb", "alpha": True}, "--alpha takes a number, got True"),
        ({"method": "npb", "max_p": 2.7}, "--max-p takes a whole number, got 2.7"),
        ({"method": "snip", "batches": 1.5}, "--batches takes a whole number, got 1.5"),
        ({"method": 5}, "unknown method 5"),
        ({"method": None, "scores": {"fc1.weight": 3}}, "scores= takes tensors by name"),
    ],
)
def test_values_of_the_wrong_type_are_refused(workdir: Path, keywords, message) -> None:
    module = module_of(write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP))
    before = weights(module)
    keywords = {"method": "magnitude", **keywords}
    with pytest.raises(BadInput) as caught:
        prunecli.prune(module, sparsity=0.5, data=(torch.randn(8, 12), torch.zeros(8)), **keywords)
    assert caught.value.message.startswith(message)
    assert_same_tensors(weights(module), before)


def test_typed_options_of_the_right_type_run(workdir: Path) -> None:
    module = module_of(write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP))
    report = prunecli.prune(module, "npb", 0.5, alpha=1, beta=0.5, max_p=1, input_shape=(12,))
    assert report.pruning["method"] == "npb"  # an int for a float option is a number
    with pytest.raises(BadInput, match="takes a whole number"):
        prunecli.score(module, "magnitude", seed="0")


def test_inspect_parses_the_input_shape_first_as_the_cli(cli, workdir: Path) -> None:
    from tests.conftest import write_llama

    folder = write_llama(workdir / "llama")
    refused = cli("inspect", folder, "--input-shape", "abc")
    assert refused.exit_code == 2
    with pytest.raises(BadInput) as caught:
        prunecli.inspect(folder, input_shape="abc")
    assert caught.value.message == cli_message(refused)


def test_score_checks_the_data_before_the_options_as_the_cli(cli, workdir: Path) -> None:
    path = write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP)
    refused = cli("score", path, "--method", "snip", "--alpha", "0.5")
    assert refused.exit_code == 2
    with pytest.raises(BadInput) as caught:
        prunecli.score(module_of(path), "snip", alpha=0.5)
    assert (
        caught.value.message
        == cli_message(refused)
        == ("--method snip needs labelled data: pass --data")
    )


def test_an_unknown_option_lists_each_option_the_api_runs_once(workdir: Path) -> None:
    module = module_of(write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP))
    with pytest.raises(BadInput, match="unknown option 'zzzz'") as caught:
        prunecli.prune(module, "npb", 0.5, zzzz=1)
    shown = caught.value.hint.removeprefix("options: ").split(", ")
    assert len(shown) == len(set(shown)) and {"alpha", "batch_size", "temperature"} <= set(shown)
    assert not {"epochs", "rate", "bingo_fraction"} & set(shown)  # training: the CLI's
    with pytest.raises(Unsupported, match="the Python API runs the one-shot methods") as caught:
        prunecli.prune(module, "imp", 0.5)  # before "needs labelled data": data would not help
    assert "--steps N" in caught.value.hint


def test_show_picks_the_rows_as_group_does(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    report = prunecli.inspect(write_zoo(workdir / "resnet.safetensors", "resnet20"))
    prunecli.show(report)  # 22 tensors: auto keeps one row each
    tensors = capsys.readouterr().out
    assert "layers.0.0.conv1.weight" in tensors and "block or tensor" not in tensors
    prunecli.show(report, group="block")
    blocks = capsys.readouterr().out
    assert "block or tensor" in blocks and "type (across 3 blocks)" in blocks
    assert "layers.0.0.conv1.weight" not in blocks
    with pytest.raises(BadInput, match="unknown --group 'layers'"):
        prunecli.show(report, group="layers")
    assert capsys.readouterr().out == ""
