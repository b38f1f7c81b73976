"""Params and MACs in `inspect` and `prune` (table, JSON, metadata) and the --max-macs gate."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import (
    assert_refused,
    metadata_of,
    report_of,
    write_llama,
    write_weights,
    write_zoo,
)

# SMALL_MLP: 12 → 16 → 8 → 4, one sample: 12·16 + 16·8 + 8·4 MACs; weights and biases stored
MLP_MACS = 12 * 16 + 16 * 8 + 8 * 4
MLP_PARAMS = MLP_MACS + 16 + 8 + 4


def test_inspect_shows_params_and_macs(cli, mlp_file: Path) -> None:
    cost = report_of(cli("inspect", mlp_file, "--json"))["cost"]
    assert cost["params"] == cost["nonzero"] == MLP_PARAMS
    assert (cost["macs"], cost["macs_input"], cost["macs_note"]) == (MLP_MACS, [1, 12], None)
    assert cost["original"] is None and cost["macs_ratio"] is None
    table = cli("inspect", mlp_file).stdout
    assert f"cost: {MLP_PARAMS:,} parameters, {MLP_MACS} MACs per 1×12 input" in table
    assert cli("inspect", mlp_file, "-q", "--report", "r.md").exit_code == 0
    assert f"{MLP_MACS} MACs per 1×12 input" in Path("r.md").read_text()


def test_weights_only_macs_are_null_with_the_reason(cli, workdir: Path) -> None:
    path = write_weights(workdir / "w.safetensors", {"fc.weight": torch.ones(4, 3)})
    cost = report_of(cli("inspect", path, "--json"))["cost"]
    assert cost["params"] == 12 and cost["macs"] is None
    assert "weights only" in cost["macs_note"]
    assert "— MACs" in cli("inspect", path).stdout
    assert_refused(cli("inspect", path, "--max-macs", "1G"), 3, "--max-macs", "weights only")


def test_max_macs_and_max_params_gates(cli, mlp_file: Path) -> None:
    assert cli("inspect", mlp_file, "--max-macs", str(MLP_MACS)).exit_code == 0
    over = cli("inspect", mlp_file, "--max-macs", str(MLP_MACS - 1), "--json")
    assert over.exit_code == 1
    check = report_of(over)["checks"][0]
    assert (check["name"], check["value"], check["passed"]) == ("max-macs", MLP_MACS, False)
    assert cli("inspect", mlp_file, "--max-macs", "0.4k").exit_code == 0  # 400 ≥ 352
    assert cli("inspect", mlp_file, "--max-macs", "0.3k").exit_code == 1
    assert cli("inspect", mlp_file, "--max-params", "1M").exit_code == 0
    assert cli("inspect", mlp_file, "--max-params", str(MLP_PARAMS - 1)).exit_code == 1
    assert_refused(cli("inspect", mlp_file, "--max-macs", "12Q"), 2, "--max-macs", "not a count")
    assert_refused(cli("inspect", mlp_file, "--max-params", "-5"), 2, "--max-params")


def test_prune_reports_before_and_after_and_records_the_original(cli, mlp_file: Path) -> None:
    result = cli("prune", mlp_file, "--method", "magnitude", "-s", "0.5", "-o", "p.safetensors")
    assert result.exit_code == 0, result.stderr
    assert f"parameters {MLP_PARAMS:,} → {MLP_PARAMS:,} (1.00×)" in result.stdout
    doc = report_of(cli("prune", mlp_file, "--method", "magnitude", "-s", "0.5", "-o", "q.safetensors", "--json"))  # fmt: skip
    cost = doc["cost"]
    # unstructured zeros: every value is still stored and multiplied
    assert (cost["params"], cost["macs"]) == (MLP_PARAMS, MLP_MACS)
    assert cost["nonzero"] == doc["totals"]["all_nonzero"] < MLP_PARAMS
    assert cost["original"] == {
        "params": MLP_PARAMS, "macs": MLP_MACS, "macs_input": [1, 12], "source": "input"
    }  # fmt: skip
    assert cost["params_ratio"] == cost["macs_ratio"] == 1.0
    meta = metadata_of(Path("p.safetensors"))
    assert meta["prunecli.params.original"] == str(MLP_PARAMS)
    assert meta["prunecli.macs.original"] == str(MLP_MACS)
    assert json.loads(meta["prunecli.macs.input"]) == [1, 12]
    again = report_of(cli("inspect", "p.safetensors", "--json"))["cost"]
    assert again["original"]["source"] == "metadata" and again["macs_ratio"] == 1.0


def test_inspect_ratio_to_a_recorded_original(cli, workdir: Path) -> None:
    """A narrower MLP whose metadata records a wider original (as a structured prune will)."""
    path = write_zoo(workdir / "slim.safetensors", "mlp", {"widths": [12, 8, 8, 4]})
    meta = metadata_of(path)
    meta.update(
        {
            "prunecli.params.original": str(MLP_PARAMS),
            "prunecli.macs.original": str(MLP_MACS),
            "prunecli.macs.input": "[1, 12]",
        }
    )
    from safetensors.torch import load_file

    write_weights(path, load_file(path), meta)
    slim_macs, slim_params = 12 * 8 + 8 * 8 + 8 * 4, 12 * 8 + 8 * 8 + 8 * 4 + 8 + 8 + 4
    cost = report_of(cli("inspect", path, "--json"))["cost"]
    assert cost["macs"] == slim_macs and cost["params"] == slim_params
    assert cost["macs_ratio"] == slim_macs / MLP_MACS
    assert cost["params_ratio"] == slim_params / MLP_PARAMS
    assert f"({slim_macs / MLP_MACS:.2f}× the original)" in cli("inspect", path).stdout
    # counted for another input: no ratio (the original's MACs were for [1, 12])
    meta["prunecli.macs.input"] = "[1, 13]"
    write_weights(path, load_file(path), meta)
    assert report_of(cli("inspect", path, "--json"))["cost"]["macs_ratio"] is None
    # a record that does not parse: no ratio, a warning, the rest of the report stands
    meta["prunecli.macs.original"] = "lots"
    write_weights(path, load_file(path), meta)
    doc = report_of(cli("inspect", path, "--json"))
    assert doc["cost"]["original"] is None and doc["cost"]["macs"] == slim_macs
    assert any("unreadable" in warning for warning in doc["warnings"])


def test_hugging_face_folder_counts_tokens(cli, workdir: Path) -> None:
    folder = write_llama(workdir / "llama")  # hidden 16, FFN 32, 2 heads, 1 layer, vocab 32
    cost = report_of(cli("inspect", folder, "--json"))["cost"]
    length = 32  # the config's max_position_embeddings, under the 128 tokens of the default
    per_layer = length * (4 * 16 * 16 + 3 * 16 * 32) + 2 * length * length * 16
    assert cost["macs"] == per_layer + length * 16 * 32 and cost["macs_input"] == [1, length]
    short = report_of(cli("inspect", folder, "--input-shape", "8", "--json"))["cost"]
    assert short["macs"] == 8 * (4 * 16 * 16 + 3 * 16 * 32) + 2 * 8 * 8 * 16 + 8 * 16 * 32
    assert "per sequence of 8 tokens" in cli("inspect", folder, "--input-shape", "8").stdout
    # a folder is pruned chunk by chunk: the same shapes, the same MACs, the original recorded
    pruned = report_of(cli("prune", folder, "--method", "magnitude", "-s", "0.5", "-o", "p", "--json"))  # fmt: skip
    assert pruned["cost"]["macs"] == cost["macs"] == pruned["cost"]["original"]["macs"]
    assert pruned["cost"]["nonzero"] < pruned["cost"]["params"] == cost["params"]
    meta = metadata_of(workdir / "p" / "model.safetensors")
    assert meta["prunecli.macs.original"] == str(cost["macs"])


def test_a_module_that_takes_indices_is_counted_on_token_ids() -> None:
    from prunecli.jobs.cost import measure_macs
    from prunecli.models.loaded import Architecture, LoadedModel

    module = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 3)).eval()
    tensors = dict(module.state_dict())
    model = LoadedModel(tensors, {}, "m", "safetensors", None, module, Architecture("x:y"))
    macs = measure_macs(model, (5,))  # float zeros fail in the embedding; ids fit
    assert (macs.value, macs.input, macs.note) == (5 * 8 * 3, [1, 5], None)
