"""Calibration data: text and token ids → seeded windows of the folder's tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from prunecli.calibration.data import load_calibration, max_positions
from prunecli.errors import BadInput, Unsupported
from tests.conftest import pydoc_texts, write_llama, write_tokenizer

VOCAB = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llama")
    write_llama(path, vocab_size=VOCAB, max_position_embeddings=64)
    return write_tokenizer(path, VOCAB)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n\n".join(pydoc_texts()[:40]))
    return path


def config_of(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def stream_of(folder: Path, text: str) -> torch.Tensor:
    """The folder's tokens of ``text`` through the tokenizers library directly."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text).ids
    return torch.tensor(ids)


def assert_windows_of(windows: torch.Tensor, stream: torch.Tensor) -> None:
    """Every window is a run of consecutive tokens of ``stream``."""
    runs = stream.unfold(0, windows.shape[1], 1)
    for window in windows:
        assert (runs == window).all(dim=1).any()


def test_text_windows_come_from_the_tokenized_stream(folder: Path, corpus: Path) -> None:
    got = load_calibration(str(corpus), folder, config_of(folder), samples=16, seq_len=24)
    stream = stream_of(folder, corpus.read_text())
    assert got.input_ids.shape == (16, 24) and got.input_ids.dtype == torch.int64
    assert got.tokens == stream.numel() > 10_000
    assert_windows_of(got.input_ids, stream)
    assert len({tuple(w.tolist()) for w in got.input_ids}) == 16  # random starts, not one


def test_windows_follow_the_seed(folder: Path, corpus: Path) -> None:
    config = config_of(folder)
    one = load_calibration(str(corpus), folder, config, samples=8, seq_len=16, seed=1)
    again = load_calibration(str(corpus), folder, config, samples=8, seq_len=16, seed=1)
    other = load_calibration(str(corpus), folder, config, samples=8, seq_len=16, seed=2)
    assert torch.equal(one.input_ids, again.input_ids)
    assert not torch.equal(one.input_ids, other.input_ids)


def test_default_length_is_the_models_positions_below_2048(folder: Path, corpus: Path) -> None:
    got = load_calibration(str(corpus), folder, config_of(folder), samples=2)
    assert got.input_ids.shape == (2, 64)
    assert max_positions({"n_positions": 1024}) == 1024
    assert max_positions({"text_config": {"max_position_embeddings": 4096}}) == 4096


def test_jsonl_texts_are_joined_into_one_stream(folder: Path, tmp_path: Path) -> None:
    texts = pydoc_texts()[:5]
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    got = load_calibration(str(data), folder, config_of(folder), samples=4, seq_len=16)
    stream = stream_of(folder, "\n\n".join(texts))
    assert got.tokens == stream.numel()
    assert_windows_of(got.input_ids, stream)


def test_jsonl_line_without_text_is_named(folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "corpus.jsonl"
    data.write_text('{"text": "a b c"}\n{"content": "no text"}\n')
    with pytest.raises(BadInput, match='line 2 has no "text" field'):
        load_calibration(str(data), folder, config_of(folder), samples=1, seq_len=2)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_token_ids_without_tokenizer(suffix: str, tmp_path: Path) -> None:
    model = write_llama(tmp_path / "model", vocab_size=VOCAB)  # no tokenizer files
    ids = torch.arange(60).reshape(3, 20) % VOCAB
    mask = torch.ones(3, 20, dtype=torch.int64)
    mask[2, 15:] = 0  # padding: dropped
    data = tmp_path / f"ids{suffix}"
    if suffix == ".npz":
        np.savez(data, input_ids=ids.numpy(), attention_mask=mask.numpy())
    else:
        save_file({"input_ids": ids, "attention_mask": mask}, str(data))
    got = load_calibration(str(data), model, config_of(model), samples=5, seq_len=10)
    assert got.tokens == 55
    assert_windows_of(got.input_ids, ids.reshape(-1)[:55])


def test_text_on_a_folder_without_tokenizer_asks_for_ids(tmp_path: Path, corpus: Path) -> None:
    model = write_llama(tmp_path / "model", vocab_size=VOCAB)
    with pytest.raises(BadInput, match="no tokenizer") as caught:
        load_calibration(str(corpus), model, config_of(model), samples=1, seq_len=4)
    assert "token ids" in str(caught.value) and caught.value.exit_code == 2


def test_ids_outside_the_vocabulary_are_refused(tmp_path: Path) -> None:
    model = write_llama(tmp_path / "model", vocab_size=VOCAB)
    data = tmp_path / "ids.npz"
    np.savez(data, input_ids=np.array([[1, 2, VOCAB, 3]]))
    with pytest.raises(BadInput, match=f"token id {VOCAB}, outside the model's vocabulary"):
        load_calibration(str(data), model, config_of(model), samples=1, seq_len=2)


@pytest.mark.parametrize(
    ("samples", "seq_len", "message"),
    [
        (0, 8, "--samples must be at least 1"),
        (1, 65, "--seq-len 65 is longer than the model takes \\(64 positions\\)"),
    ],
)
def test_impossible_requests(folder: Path, corpus: Path, samples, seq_len, message) -> None:
    with pytest.raises(BadInput, match=message):
        load_calibration(str(corpus), folder, config_of(folder), samples=samples, seq_len=seq_len)


def test_too_little_text_says_found_and_needed(folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "short.txt"
    data.write_text("the the the")
    with pytest.raises(BadInput, match="holds 3 tokens; a window of --seq-len 8 needs at least 8"):
        load_calibration(str(data), folder, config_of(folder), samples=1, seq_len=8)


def test_tokenizer_code_is_not_run_without_trust(folder: Path, corpus: Path, tmp_path) -> None:
    import shutil

    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    settings = json.loads((copy / "tokenizer_config.json").read_text())
    settings["auto_map"] = {"AutoTokenizer": ["tok.Mine", None]}
    (copy / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(Unsupported, match="auto_map: .*tok.Mine"):
        load_calibration(str(corpus), copy, config_of(copy), samples=1, seq_len=4)
