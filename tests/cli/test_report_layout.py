"""The report's layer rows on real-sized models: file order, whole names, rows by block."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import report_of, write_llama, write_weights, write_zoo
from safetensors.torch import load_file

from prunecli.cli.blocks import split_name
from prunecli.cli.report_tables import common_prefix, cut
from prunecli.models.order import natural_key

BERT_TYPES = [  # BertLayer's order, not the alphabet's
    "attention.self.query.weight",
    "attention.self.key.weight",
    "attention.self.value.weight",
    "attention.output.dense.weight",
    "intermediate.dense.weight",
    "output.dense.weight",
]
_LINEAR = {"query", "key", "value", "dense"}  # BERT's prunable weights: its Linear layers


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A 6-block BERT-like folder (save_pretrained) and its tensor names in the module's order."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        num_hidden_layers=6,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=64,
    )
    module = transformers.BertModel(config)
    folder = tmp_path_factory.mktemp("bert") / "bert"
    module.save_pretrained(folder)
    order = [
        name for name in module.state_dict() if name in load_file(folder / "model.safetensors")
    ]
    return folder, order


def table_rows(stdout: str) -> list[str]:
    """The first cell of every table row (headers, rules, totals and the lines below left out)."""
    rows, inside = [], False
    for line in stdout.splitlines():
        cells = line.strip("│┃ ").split()
        if not cells or set(line.strip()) <= set("─━┡┩╇┼├┤└┴┘┌┬┐┏┳┓╋ "):
            inside = bool(cells) or inside
            continue
        if cells[0] in ("total", "all", "shard", "effective", "pruned", "wrote"):
            inside = False
            continue
        if inside and cells[0] not in ("layer", "block", "type"):  # a header
            rows.append(cells[0])
    return rows


def whole(label: str, names: list[str]) -> bool:
    """``label`` is a name, a block of names, or a name's tail starting at a dot (``…x.weight``)."""
    tail = label.removeprefix("…")
    return any(
        name == label or name.startswith(label + ".") or name.endswith("." + tail) for name in names
    )


@pytest.mark.parametrize("columns", [80, 60])
def test_bert_default_rows_by_block_then_by_type(
    cli, monkeypatch: pytest.MonkeyPatch, bert: tuple[Path, list[str]], columns: int
) -> None:
    folder, order = bert
    monkeypatch.setenv("COLUMNS", str(columns))
    result = cli("inspect", folder)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = table_rows(result.stdout)
    assert rows == [*(f"encoder.layer.{i}" for i in range(6)), "pooler.dense.weight", *BERT_TYPES]
    assert all(whole(row, order) for row in rows)
    assert "type (across 6 blocks)" in result.stdout
    (first,) = [line for line in lines if line.startswith("encoder.layer.0 ")]
    assert "6 tensors" in first and "8,192" in first  # 4 × 32×32 + 2 × 64×32 weights
    (query,) = [line for line in lines if line.startswith("attention.self.query.weight ")]
    assert "6 × 32×32" in query and "6,144" in query
    assert max(len(line) for line in lines) <= columns


@pytest.mark.parametrize("columns", [80, 60])
def test_bert_all_lists_every_tensor_in_file_order_on_one_line(
    cli, monkeypatch: pytest.MonkeyPatch, bert: tuple[Path, list[str]], columns: int
) -> None:
    folder, order = bert
    monkeypatch.setenv("COLUMNS", str(columns))
    result = cli("inspect", folder, "--all")
    assert result.exit_code == 0, result.stderr
    rows = table_rows(result.stdout)
    assert len(rows) == len(order) == 103
    for row, name in zip(rows, order, strict=True):  # each row whole, in the module's order
        assert row == name or (row.startswith("…") and name.endswith("." + row[1:])), (row, name)
    assert "type (across" not in result.stdout
    if columns == 80:
        assert rows == order  # the plain layout fits every name whole
    assert max(len(line) for line in result.stdout.splitlines()) <= columns


def test_bert_group_tensor_and_json_keep_every_tensor(
    cli, monkeypatch: pytest.MonkeyPatch, bert: tuple[Path, list[str]]
) -> None:
    folder, order = bert
    monkeypatch.setenv("COLUMNS", "80")
    prunable = [n for n in order if n.endswith(".weight") and n.split(".")[-2] in _LINEAR]
    result = cli("inspect", folder, "--group", "tensor")
    assert result.exit_code == 0, result.stderr
    assert table_rows(result.stdout) == prunable
    assert prunable[:4] == [f"encoder.layer.0.{kind}" for kind in BERT_TYPES[:4]]
    report = report_of(cli("inspect", folder, "--json"))  # grouped on screen, whole in JSON
    assert [layer["name"] for layer in report["layers"]] == prunable
    everything = report_of(cli("inspect", folder, "--all", "--json", "--group", "block"))
    assert [layer["name"] for layer in everything["layers"]] == order


def test_bert_prune_report_by_block(
    cli, monkeypatch: pytest.MonkeyPatch, bert: tuple[Path, list[str]], tmp_path: Path
) -> None:
    folder, order = bert
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "pruned"
    result = cli("prune", folder, "--method", "magnitude", "--sparsity", "0.5", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert table_rows(result.stdout)[:6] == [f"encoder.layer.{i}" for i in range(6)]
    assert table_rows(result.stdout)[-6:] == BERT_TYPES
    listed = cli("inspect", out, "--group", "tensor")
    assert len(table_rows(listed.stdout)) == 37


def test_small_model_keeps_the_per_tensor_table(cli, mlp_file: Path) -> None:
    result = cli("inspect", mlp_file)
    assert result.exit_code == 0, result.stderr
    assert table_rows(result.stdout) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert "block or tensor" not in result.stdout and "type (across" not in result.stdout


def test_resnet_rows_in_module_order_and_by_block_on_request(
    cli, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    model = write_zoo(workdir / "resnet.safetensors", "resnet20")
    result = cli("inspect", model)  # 22 tensors: one row each, conv1 first and fc last
    assert result.exit_code == 0, result.stderr
    rows = table_rows(result.stdout)
    assert len(rows) == 22 and rows[0] == "conv1.weight" and rows[-1] == "fc.weight"
    assert rows[1:3] == ["layers.0.0.conv1.weight", "layers.0.0.conv2.weight"]
    grouped = cli("inspect", model, "--group", "block")
    assert grouped.exit_code == 0, grouped.stderr
    rows = table_rows(grouped.stdout)
    assert rows[:5] == ["conv1.weight", "layers.0", "layers.1", "layers.2", "fc.weight"]
    assert "0.shortcut.0.weight" in rows[5:]


def test_llama_types_come_from_the_names(cli, workdir: Path) -> None:
    folder = write_llama(workdir / "llama", num_hidden_layers=3)
    result = cli("inspect", folder, "--group", "block")
    assert result.exit_code == 0, result.stderr
    rows = table_rows(result.stdout)
    assert rows[:3] == ["model.layers.0", "model.layers.1", "model.layers.2"]
    assert rows[3:] == [
        f"{part}.weight"
        for part in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    ]


def test_weights_only_names_in_natural_order_and_a_long_prefix_left_out(
    cli, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    prefix = "transformer.backbone_with_a_rather_long_name.stages."
    tensors = {f"{prefix}{i}.projection.weight": torch.ones(4, 4) for i in range(12)}
    model = write_weights(workdir / "w.safetensors", tensors)
    result = cli("inspect", model, "--group", "tensor")
    assert result.exit_code == 0, result.stderr
    assert table_rows(result.stdout) == [f"{i}.projection.weight" for i in range(12)]
    assert f"names below start with {prefix}" in " ".join(result.stdout.split())
    report = report_of(cli("inspect", model, "--json"))
    assert [layer["name"] for layer in report["layers"]] == list(tensors)  # 2 before 10


def test_unknown_group_is_a_usage_error(cli, mlp_file: Path) -> None:
    result = cli("inspect", mlp_file, "--group", "layers")
    assert result.exit_code == 2
    assert "unknown --group 'layers'" in result.stderr


def test_name_helpers() -> None:
    assert split_name("encoder.layer.11.attention.self.query.weight") == (
        "encoder.layer",
        "encoder.layer.11",
        "attention.self.query.weight",
    )
    assert split_name("pooler.dense.weight") is None
    assert common_prefix(["bert.encoder.a.w", "bert.encoder.b.w"]) == "bert.encoder."
    assert common_prefix(["a.w", "a.w"]) == "a."
    assert common_prefix(["one.w"]) == ""
    assert cut("encoder.layer.0.attention.self.query.weight", 37) == (
        "…layer.0.attention.self.query.weight"
    )
    assert cut("short.weight", 20) == "short.weight"
    names = ["h.10.w", "h.2.w", "h.1.w"]
    assert sorted(names, key=natural_key) == ["h.1.w", "h.2.w", "h.10.w"]


def test_rows_are_grouped_once_per_report(
    cli, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The choice between block and tensor rows hands on the rows it built (not built twice)."""
    from prunecli.cli import blocks

    calls: list[int] = []
    real = blocks._blocks

    def counted(layers):  # noqa: ANN001, ANN202 - a spy on the names' split into blocks
        calls.append(len(layers))
        return real(layers)

    monkeypatch.setattr(blocks, "_blocks", counted)
    model = write_zoo(workdir / "resnet.safetensors", "resnet20")
    result = cli("inspect", model, "--group", "block")
    assert result.exit_code == 0, result.stderr
    assert "type (across 3 blocks)" in result.stdout
    assert calls == [22]
