"""`prunecli sweep`: a run's figure equals `prune` + `retrain` + `eval` run apart; refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import report_of, run_refused, write_method_inputs, write_zoo
from svg_lines import line_groups, vertices

DIGITS_MLP = {"widths": [64, 16, 10]}


@pytest.fixture
def mlp(workdir: Path) -> Path:
    return write_zoo(workdir / "mlp.safetensors", "mlp", DIGITS_MLP)


def sweep(cli, *args: object) -> dict:  # noqa: ANN001
    result = cli("sweep", "mlp.safetensors", "--data", "digits", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_a_sweep_run_equals_prune_retrain_eval_run_apart(cli, mlp: Path) -> None:
    doc = sweep(
        cli,
        "--methods", "magnitude,snip",
        "--sparsities", "0.5,0.9",
        "--seeds", "1",
        "--retrain-steps", "5",
        "-o", "sweep.json",
    )  # fmt: skip
    assert json.loads(Path("sweep.json").read_text()) == {**doc, "seconds": doc["seconds"]}
    assert doc["schema"] == "prunecli.sweep/1" and len(doc["runs"]) == 4
    assert doc["settings"]["scored_once"] == ["magnitude", "snip"]
    for method, sparsity in (("snip", 0.9),):  # scored once, masks for 0.5 and 0.9 from it
        apart = f"{method}.safetensors"
        pruned = cli(
            "prune", mlp, "--method", method, "--sparsity", sparsity, "--seed", 1,
            "--data", "digits", "-o", apart, "-q",
        )  # fmt: skip
        assert pruned.exit_code == 0, pruned.stderr
        trained = cli(
            "retrain", apart, "--data", "digits", "--steps", 5, "--seed", 1,
            "-o", "r-" + apart, "-q",
        )  # fmt: skip
        assert trained.exit_code == 0, trained.stderr
        quality = report_of(cli("eval", "r-" + apart, "--data", "digits", "--json"))["quality"]
        (run,) = [r for r in doc["runs"] if r["method"] == method and r["sparsity"] == sparsity]
        assert run["seed"] == 1 and run["retrain_steps"] == 5
        assert run["accuracy"] == pytest.approx(quality["accuracy"]["value"], abs=1e-9)
        assert run["loss"] == pytest.approx(quality["cross_entropy"]["value"], abs=1e-6)
        assert run["achieved_sparsity"] == pytest.approx(sparsity, abs=1e-3)


def test_summary_is_the_spread_over_seeds_and_the_plot_has_one_line_per_method(
    cli, mlp: Path
) -> None:
    doc = sweep(
        cli, "--methods", "random,magnitude", "--sparsities", "0.8,0.5", "--seeds", "0,1",
        "--plot", "sweep.svg",
    )  # fmt: skip
    assert [(r["method"], r["sparsity"], r["seed"]) for r in doc["runs"]] == [
        (m, s, seed) for m in ("random", "magnitude") for s in (0.5, 0.8) for seed in (0, 1)
    ]
    for row in doc["summary"]:
        values = [
            r["accuracy"]
            for r in doc["runs"]
            if (r["method"], r["sparsity"]) == (row["method"], row["sparsity"])
        ]
        mean = sum(values) / 2
        assert row["mean"] == pytest.approx(mean)
        assert row["std"] == pytest.approx(abs(values[0] - values[1]) / 2)
        assert (row["min"], row["max"], row["seeds"]) == (min(values), max(values), 2)
    groups = line_groups(Path("sweep.svg").read_bytes())
    assert set(groups) == {"method-random", "method-magnitude"}
    assert all(len(vertices(group)) == 2 for group in groups.values())


def test_parallel_jobs_give_the_same_figures(cli, workdir: Path) -> None:
    # npz data, no retraining, one task (one worker): a spawned worker imports neither
    # scikit-learn nor the optimizers' compiler, and starts in about 2 s; retraining is seeded
    # per run either way
    write_method_inputs(workdir)
    args = ("sweep", "init.safetensors", "--data", "data.npz", "--methods", "random")
    args += ("--sparsities", "0.5,0.9", "--seeds", "3", "--json")
    one, two = cli(*args), cli(*args, "--jobs", "2")
    assert one.exit_code == two.exit_code == 0, one.stderr + two.stderr
    runs = [
        [{k: v for k, v in run.items() if k != "seconds"} for run in json.loads(r.stdout)["runs"]]
        for r in (one, two)
    ]
    assert runs[0] == runs[1] and len(runs[0]) == 2
    assert json.loads(one.stdout)["summary"] == json.loads(two.stdout)["summary"]


def test_the_table_shows_mean_and_spread_per_method_and_sparsity(cli, mlp: Path) -> None:
    result = cli(
        "sweep", mlp, "--data", "digits", "--methods", "magnitude", "--sparsities", "0.5,90%"
    )
    assert result.exit_code == 0, result.stderr
    assert "magnitude" in result.stdout and "0.9" in result.stdout and " ± " in result.stdout


def test_an_nm_pattern_run_equals_prune_with_the_pattern_and_stays_off_the_plot(
    cli, mlp: Path
) -> None:
    doc = sweep(
        cli, "--methods", "magnitude,snip", "--sparsities", "0.5,2:4", "--seeds", "1",
        "--plot", "nm.svg",
    )  # fmt: skip
    assert doc["settings"]["patterns"] == ["2:4"] and doc["settings"]["sparsities"] == [0.5]
    assert [(r["method"], r["pattern"]) for r in doc["runs"]] == [
        ("magnitude", None), ("magnitude", "2:4"), ("snip", None), ("snip", "2:4"),
    ]  # fmt: skip
    (run,) = [r for r in doc["runs"] if (r["method"], r["pattern"]) == ("snip", "2:4")]
    pruned = cli(
        "prune", mlp, "--method", "snip", "--pattern", "2:4", "--seed", "1", "--data", "digits",
        "-o", "nm.safetensors", "-q",
    )  # fmt: skip
    assert pruned.exit_code == 0, pruned.stderr
    quality = report_of(cli("eval", "nm.safetensors", "--data", "digits", "--json"))["quality"]
    assert run["accuracy"] == pytest.approx(quality["accuracy"]["value"], abs=1e-12)
    assert run["sparsity"] == 0.5 and run["achieved_sparsity"] == pytest.approx(0.5)
    assert [(r["pattern"], r["seeds"]) for r in doc["summary"]] == [(None, 1), ("2:4", 1)] * 2
    groups = line_groups(Path("nm.svg").read_bytes())
    assert all(len(vertices(group)) == 1 for group in groups.values())  # 0.5 only


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("--methods", "magnitud", "--sparsities", "0.5"), 2, "did you mean 'magnitude'"),
        (("--methods", "magnitude,bogus", "--sparsities", "0.5"), 2, "'bogus'"),
        (("--methods", "imp", "--sparsities", "0.5"), 3, "trains the model"),
        (("--methods", "magnitude", "--sparsities", "0.5,1.0"), 2, "outside [0, 1)"),
        (("--methods", "magnitude", "--sparsities", ""), 2, "empty entry"),
        (("--methods", "magnitude", "--sparsities", "0.5", "--plot", "a.gif"), 2, ".gif"),
        (("--methods", "magnitude", "--sparsities", "0.5", "-o", "mlp.safetensors"), 2, "input"),
        (("--methods", "magnitude", "--sparsities", "0.5", "-o", "old.json"), 2, "exists"),
        (("--methods", "magnitude", "--sparsities", "0.5", "--seeds", "a"), 2, "integer"),
        (("--methods", "magnitude", "--sparsities", "0.5", "--scope", "owl"), 2, "wanda"),
        (("--methods", "magnitude", "--sparsities", "2:4:8"), 2, "is not N:M"),
        (("--methods", "magnitude", "--sparsities", "2:4", "--scope", "layer"), 2, "--scope layer"),
        (("--methods", "magnitude,npb", "--sparsities", "0.5,2:4"), 2, "npb chooses its own"),
        (("--methods", "magnitude", "--sparsities", "3:7"), 2, "not a multiple of 7"),
    ],
)
def test_bad_input_is_refused_before_any_work(cli, mlp: Path, args, code, fragment) -> None:  # noqa: ANN001
    Path("old.json").write_text("{}")
    run_refused(cli, mlp.parent, ("sweep", mlp, "--data", "digits", *args), code, fragment)


def test_missing_matplotlib_is_unsupported(cli, mlp: Path, monkeypatch) -> None:  # noqa: ANN001
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    args = ("sweep", mlp, "--data", "digits", "--methods", "random", "--sparsities", "0.5")
    run_refused(cli, mlp.parent, (*args, "--plot", "s.png"), 3, "prunecli[plot]")


def test_one_shot_methods_are_scored_once_per_seed_iterative_ones_per_sparsity(
    workdir: Path,
) -> None:
    from prunecli.criteria import get_criterion
    from prunecli.evaluation.sweep import SweepSettings, Task, plan_tasks, run_task
    from prunecli.jobs.session import open_model
    from prunecli.pruning.criterion import Inputs

    criteria = {name: get_criterion(name) for name in ("magnitude", "synflow", "npb")}
    tasks = plan_tasks(criteria, (0.5, 0.9), (0, 1))
    assert [t for t in tasks if t.method == "magnitude"] == [
        Task("magnitude", 0, (0.5, 0.9)),
        Task("magnitude", 1, (0.5, 0.9)),
    ]
    assert {t.sparsities for t in tasks if t.method != "magnitude"} == {(0.5,), (0.9,)}
    assert len(tasks) == 2 + 4 + 4

    calls = []

    class Counting(get_criterion("magnitude")):  # type: ignore[misc]
        def score(self, ctx):  # noqa: ANN001, ANN202
            calls.append(ctx.seed)
            return super().score(ctx)

    write_method_inputs(workdir)
    from prunecli.data.sources import load_data

    model, names = open_model("init.safetensors")
    data = load_data("data.npz")
    before = {name: t.clone() for name, t in model.tensors.items()}
    runs = run_task(
        model, names, Counting, Inputs(), data, Task("m", 4, (0.25, 0.5, 0.75)), SweepSettings()
    )
    assert calls == [4]  # one scoring for three sparsities
    assert [r["achieved_sparsity"] for r in runs] == pytest.approx([0.25, 0.5, 0.75], abs=0.01)
    assert all(torch.equal(before[n], t) for n, t in model.tensors.items())  # input untouched
