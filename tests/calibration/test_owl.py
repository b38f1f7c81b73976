"""`prune --scope owl` (OWL, Yin et al. 2024): per-block sparsities against the formula computed
here from the dense model's activations (transformers' whole model, hooks), each block pruned at
its own sparsity, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from prunecli.calibration.blocks import Block
from prunecli.calibration.data import load_calibration
from prunecli.calibration.owl import owl_sparsities
from prunecli.jobs.calibrated import calibrated_prune_to_file, plan_calibrated
from prunecli.jobs.validate import prune_settings
from tests.calibration.test_runner import in_memory, read_folder
from tests.conftest import assert_refused, files_in, write_calibrated_llama

transformers = pytest.importorskip("transformers")

SIZES = {"num_hidden_layers": 3, "hidden_size": 32, "intermediate_size": 64, "vocab_size": 64}
WINDOWS = ("--samples", 4, "--seq-len", 16)
BLOCKS = [f"model.layers.{i}" for i in range(3)]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_calibrated_llama(tmp_path_factory.mktemp("owl"), **SIZES)


def corpus(llama: Path) -> Path:
    return llama.parent / "corpus.txt"


def windows(llama: Path) -> torch.Tensor:
    config = json.loads((llama / "config.json").read_text())
    return load_calibration(str(corpus(llama)), llama, config, 4, 16, seed=0).input_ids


def dense_ratios(llama: Path, ids: torch.Tensor, m: float, only: str = "") -> list[float]:
    """Each block's outlier ratio from the DENSE whole model: every linear layer's input caught
    by a hook, |W|·‖X‖ per layer, the block's scores concatenated (of the layers whose name
    holds ``only``), the fraction above m × mean."""
    model = transformers.AutoModelForCausalLM.from_pretrained(llama, attn_implementation="eager")
    model.eval()
    squares: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def grab(_, args, __) -> None:
            x = args[0].double().reshape(-1, args[0].shape[-1])
            squares[name] = squares.get(name, 0) + (x * x).sum(0)

        return grab

    layers = {n: mod for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    handles = [mod.register_forward_hook(hook(n)) for n, mod in layers.items() if n != "lm_head"]
    with torch.no_grad():
        model(input_ids=ids)
    for handle in handles:
        handle.remove()
    ratios = []
    for block in BLOCKS:
        scores = np.concatenate(
            [
                (layers[n].weight.detach().double().abs() * squares[n].sqrt()).numpy().ravel()
                for n in layers
                if n.startswith(block + ".") and only in n
            ]
        )
        assert scores.size == (3 * 32 * 64 if only else 4 * 32 * 32 + 3 * 32 * 64)
        ratios.append(float(np.mean(scores > m * scores.mean())))
    return ratios


def formula(ratios: list[float], target: float, lam: float) -> np.ndarray:
    """The reference's steps, in numpy: normalise, × 2λ, shift to mean 1 − S, 1 − density."""
    r = np.array(ratios) * 100  # the reference counts in percent
    r = (r - r.min()) * (1 / (r.max() - r.min()) * lam * 2)
    return 1 - (r - np.mean(r) + (1 - target))


class PerBlockWanda:
    """Wanda at each block's own sparsity: the lowest round(s·columns) |W|·‖X‖ of each row."""

    def __init__(self, sparsities: list[float]) -> None:
        self.sparsities, self.squares = sparsities, {}

    def observe(self, name: str, module: torch.nn.Module, inputs: torch.Tensor) -> None:
        x = inputs.double().reshape(-1, inputs.shape[-1])
        self.squares[name] = self.squares.get(name, 0) + (x * x).sum(0)

    def prune_block(self, block: Block) -> None:
        for name, weight in block.weights.items():
            score = weight.double().abs() * self.squares.pop(name).sqrt()
            k = round(self.sparsities[block.index] * score.shape[1])
            lowest = score.argsort(dim=1, stable=True)[:, :k]
            weight.mul_(torch.ones_like(score, dtype=torch.bool).scatter_(1, lowest, False))


def test_formula_by_hand() -> None:
    # ratios 1, 2, 4 → normalised 0, 1/3, 1 → × 0.2 → 0, 0.0667, 0.2, mean 0.0889
    got = owl_sparsities([0.01, 0.02, 0.04], 0.7, 0.1)
    assert got == pytest.approx([0.7 + 0.0888889, 0.7 + 0.0888889 - 0.0666667, 0.7 - 0.1111111])
    assert sum(got) / 3 == pytest.approx(0.7, abs=1e-12)
    assert owl_sparsities([0.03, 0.03], 0.6, 0.1) == [0.6, 0.6]  # the reference's 0/0
    assert owl_sparsities([0.01, 0.05], 0.5, 0.0) == pytest.approx([0.5, 0.5])


def test_wanda_owl_blocks_at_their_own_sparsity(cli, llama, tmp_path) -> None:
    out = tmp_path / "out"
    args = ("--method", "wanda", "--sparsity", "0.7", "--scope", "owl", "--owl-lambda", "0.1")
    result = cli("prune", llama, *args, "--data", corpus(llama), *WINDOWS, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    pruning = json.loads(result.stdout)["pruning"]
    assert pruning["scope"] == "owl" and pruning["owl_m"] == 5.0 and pruning["owl_lambda"] == 0.1
    ids = windows(llama)
    ratios = dense_ratios(llama, ids, 5.0)
    assert list(pruning["outlier_ratio"].values()) == pytest.approx(ratios, rel=1e-12)
    assert len(set(ratios)) == 3  # three different ratios: three different sparsities
    expected = formula(ratios, 0.7, 0.1)
    sparsities = [pruning["block_sparsity"][b] for b in BLOCKS]
    assert sparsities == pytest.approx(list(expected), abs=1e-12)
    assert np.mean(sparsities) == pytest.approx(0.7, abs=1e-12)
    assert max(abs(s - 0.7) for s in sparsities) > 0.05  # not all at the target
    got = read_folder(out)
    for index, block in enumerate(BLOCKS):
        for name in (n for n in got if n.startswith(block + ".") and n.endswith("proj.weight")):
            zeros = (got[name] == 0).sum(dim=1)
            assert (zeros == round(sparsities[index] * got[name].shape[1])).all(), name
    reference = in_memory(llama, ids, PerBlockWanda(sparsities), batch=4)
    for name in (n for n in got if n.endswith("proj.weight")):
        assert torch.equal(got[name], reference[name]), name  # the second pass: pruned inputs
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["prunecli.scope"] == "owl" and meta["prunecli.owl_lambda"] == "0.1"
    assert json.loads(meta["prunecli.block_sparsity"]) == pruning["block_sparsity"]


def test_owl_counts_the_outliers_of_the_chosen_layers_only(cli, llama, tmp_path) -> None:
    out = tmp_path / "out"
    args = ("--method", "wanda", "--sparsity", "0.6", "--scope", "owl", "--include", "*.mlp.*")
    result = cli("prune", llama, *args, "--data", corpus(llama), *WINDOWS, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    pruning = json.loads(result.stdout)["pruning"]
    ratios = dense_ratios(llama, windows(llama), 5.0, only=".mlp.")
    assert list(pruning["outlier_ratio"].values()) == pytest.approx(ratios, rel=1e-12)
    got, before = read_folder(out), read_folder(llama)
    attention = [n for n in got if ".self_attn." in n]
    assert attention and all(torch.equal(got[n], before[n]) for n in attention)


def test_sparsegpt_owl_exact_count_per_layer_and_two_passes(llama, tmp_path) -> None:
    settings = prune_settings("sparsegpt", False, 0.6, "owl", "exponential", None, 0)
    options = {"samples": 4, "seq_len": 16, "owl_m": 3.0}
    plan = plan_calibrated(str(llama), "sparsegpt", settings, options)
    ticks: list[tuple[int, int, str]] = []
    report = calibrated_prune_to_file(
        plan, str(corpus(llama)), str(tmp_path / "out"), progress=lambda *t: ticks.append(t)
    )
    assert [t[:2] for t in ticks] == [(i, 6) for i in range(1, 7)]
    assert [t[2] for t in ticks[:3]] == [f"owl outliers (dense) {b}" for b in BLOCKS]
    assert [t[2] for t in ticks[3:]] == [f"pruning {b}" for b in BLOCKS]
    ratios = dense_ratios(llama, windows(llama), 3.0)
    expected = formula(ratios, 0.6, 0.08)  # the default λ
    sparsities = [report.pruning["block_sparsity"][b] for b in BLOCKS]
    assert sparsities == pytest.approx(list(expected), abs=1e-12)
    got = read_folder(tmp_path / "out")
    for index, block in enumerate(BLOCKS):
        for name in (n for n in got if n.startswith(block + ".") and n.endswith("proj.weight")):
            assert int((got[name] == 0).sum()) == round(sparsities[index] * got[name].numel())


def test_refused(cli, llama, tmp_path) -> None:
    out, text = tmp_path / "out", corpus(llama)
    wanda = ("prune", llama, "--method", "wanda", "--data", text, *WINDOWS, "-o", out)
    owl = (*wanda, "--sparsity", "0.7", "--scope", "owl")
    cases = [
        ((*wanda, "--pattern", "2:4", "--scope", "owl"), "--scope owl does not apply"),
        ((*wanda, "--sparsity", "0.7", "--owl-lambda", "0.1"), "--owl-lambda applies to --scope"),
        ((*wanda, "--sparsity", "0.7", "--owl-m", "3"), "--owl-m applies to --scope owl"),
        ((*owl, "--owl-lambda", "-0.1"), "--owl-lambda must be a finite number >= 0"),
        ((*owl, "--owl-m", "0"), "--owl-m must be a finite number > 0"),
        ((*owl, "--owl-m", "nan"), "--owl-m must be a finite number > 0"),
        ((*owl, "--owl-lambda", "0.3"), "outside [0, 1)"),  # after the dense pass
        (
            ("prune", llama, "--method", "magnitude", "--sparsity", "0.7", "--scope", "owl"),
            "--method magnitude has none",
        ),
        (
            (
                "prune",
                llama,
                "--scores",
                llama / "model.safetensors",
                "--sparsity",
                "0.7",
                "--scope",
                "owl",
            ),
            "--scores has none",
        ),  # fmt: skip
        (
            ("prune", llama, "--method", "magnitude", "--sparsity", "0.7", "--owl-m", "3"),
            "--owl-m is an option of sparsegpt and wanda",
        ),
    ]
    for args, fragment in cases:
        assert_refused(cli(*args), 2, fragment)
    assert files_in(tmp_path) == set()


def test_nan_in_the_first_pass_names_the_block(cli, llama, tmp_path) -> None:
    from safetensors.torch import save_file

    poisoned = tmp_path / "poisoned"
    poisoned.mkdir()
    for file in llama.iterdir():
        (poisoned / file.name).write_bytes(file.read_bytes())
    tensors = read_folder(llama)
    tensors["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(tensors, str(poisoned / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out"
    args = ("--method", "wanda", "--sparsity", "0.7", "--scope", "owl", "--data", corpus(llama))
    result = cli("prune", poisoned, *args, *WINDOWS, "-o", out)
    assert_refused(result, 2, "block model.layers.1 gives NaN")
    assert not out.exists()
