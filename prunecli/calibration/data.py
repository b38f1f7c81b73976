"""Calibration data for a transformer folder: text or token ids → ``samples`` windows of tokens.

``--data`` is a ``.txt`` file (the whole file one stream), a ``.jsonl`` file with a ``text``
field on every line (the texts joined by blank lines into one stream, as WikiText is), or token
ids (``.npz`` / ``.safetensors`` with a 2-D integer ``input_ids``, rows concatenated; where an
``attention_mask`` beside them is 0 the token is padding and dropped). Text is tokenized by the
folder's own tokenizer, read offline from its files. The windows start at offsets drawn from
``--seed`` over the whole stream, as the Wanda and SparseGPT reference codes draw theirs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prunecli.calibration.tokenizer import check_tokenizer_files, load_tokenizer, tokenize
from prunecli.errors import BadInput
from prunecli.io.inputs import check_input, open_input
from prunecli.io.jsonfile import parse_json
from prunecli.io.load import load_file
from prunecli.io.npz import read_npz
from prunecli.pruning.seeding import stream_seed

DEFAULT_SAMPLES = 128
DEFAULT_SEQ_LEN = 2048
TEXT_SUFFIXES = (".txt", ".jsonl")
ID_SUFFIXES = (".npz", ".safetensors")
# config.json keys that give the longest sequence a model takes, most common first
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length")
# memory a fast tokenizer holds per byte of text it encodes in one call: 119 measured on
# 18.6 MB of English (pydoc_data x 40, word-level, 3.6 M tokens: 2.1 GB); a lower round figure
_TOKENIZER_BYTES = 100
_STREAM = 0xCA11B  # the random stream of the window offsets, beside --seed


@dataclass(frozen=True)
class Calibration:
    """``input_ids`` (samples × seq_len, int64) drawn from a stream of ``tokens`` tokens."""

    input_ids: torch.Tensor
    tokens: int
    source: str

    @property
    def attention_mask(self) -> torch.Tensor | None:
        return None  # windows of a stream hold no padding


def max_positions(config: dict[str, Any]) -> int | None:
    """The longest sequence the model of ``config`` takes (nested ``text_config`` included)."""
    for key in _POSITION_KEYS:
        if type(config.get(key)) is int and config[key] > 0:
            return config[key]
    nested = config.get("text_config")
    return max_positions(nested) if isinstance(nested, dict) else None


def vocab_size(config: dict[str, Any]) -> int | None:
    if type(config.get("vocab_size")) is int:
        return config["vocab_size"]
    nested = config.get("text_config")
    return vocab_size(nested) if isinstance(nested, dict) else None


def too_few_tokens(source: str | Path, held: int, seq_len: int) -> BadInput:
    """The refusal of text with fewer than one window of ``seq_len`` tokens."""
    return BadInput(
        f"--data {source} holds {held:,} token{'' if held == 1 else 's'}; a window of "
        f"--seq-len {seq_len} needs at least {seq_len:,}",
        "give more text, or a smaller --seq-len",
    )


def load_calibration(
    data: str,
    folder: Path,
    config: dict[str, Any],
    samples: int = DEFAULT_SAMPLES,
    seq_len: int | None = None,
    seed: int = 0,
    trust_remote_code: bool = False,
) -> Calibration:
    """``samples`` windows of ``seq_len`` tokens (default min(2048, the model's positions))."""
    positions = max_positions(config)
    seq_len = check_sizes(samples, seq_len, positions)
    stream = token_stream(data, folder, trust_remote_code)
    check_vocabulary(stream, config, data)
    if stream.numel() < seq_len:
        raise too_few_tokens(data, stream.numel(), seq_len)
    if samples > stream.numel() - seq_len + 1:
        raise BadInput(
            f"--data {data} holds {stream.numel():,} tokens: room for "
            f"{stream.numel() - seq_len + 1:,} different windows of --seq-len {seq_len}, "
            f"fewer than --samples {samples:,}",
            "give more text, or fewer --samples",
        )
    return Calibration(windows(stream, samples, seq_len, seed), int(stream.numel()), data)


def check_vocabulary(stream: torch.Tensor, config: dict[str, Any], data: str) -> None:
    """Refuse token ids outside the vocabulary of the model of ``config``."""
    vocab = vocab_size(config)
    if stream.numel() and vocab is not None:
        low, high = int(stream.min()), int(stream.max())
        if low < 0 or high >= vocab:
            bad = low if low < 0 else high
            raise BadInput(
                f"--data {data} holds token id {bad}, outside the model's vocabulary "
                f"(0 to {vocab - 1})",
                "the token ids must come from this model's tokenizer",
            )


def check_sizes(samples: int, seq_len: int | None, positions: int | None) -> int:
    """The window length to use; refuses what no model run could take."""
    if samples < 1:
        raise BadInput(f"--samples must be at least 1 (got {samples})")
    if seq_len is None:
        return min(DEFAULT_SEQ_LEN, positions) if positions else DEFAULT_SEQ_LEN
    if seq_len < 1:
        raise BadInput(f"--seq-len must be at least 1 (got {seq_len})")
    if positions is not None and seq_len > positions:
        raise BadInput(
            f"--seq-len {seq_len} is longer than the model takes ({positions} positions)",
            f"pass --seq-len {positions} or less",
        )
    return seq_len


def check_activations(samples: int, seq_len: int, width: int | None) -> None:
    """Refuse windows whose activations (a block's inputs and outputs, float32, ``width``
    values per token, held for the whole run) could not fit in this machine's memory."""
    memory = _memory_bytes()
    if memory is None:
        return
    needed = samples * seq_len * (8 + 2 * 4 * (width or 1))
    if needed > memory:
        raise BadInput(
            f"--samples {samples:,} windows of --seq-len {seq_len:,} tokens need "
            f"{needed / 2**30:,.1f} GiB of activations, more than this machine's memory "
            f"({memory / 2**30:.1f} GiB)",
            "pass fewer --samples or a smaller --seq-len",
        )


def windows(stream: torch.Tensor, samples: int, seq_len: int, seed: int) -> torch.Tensor:
    """``samples`` windows of ``seq_len`` consecutive tokens of ``stream``, at start offsets
    drawn uniformly (with replacement) from every offset where a whole window fits."""
    generator = torch.Generator().manual_seed(stream_seed(seed, _STREAM))
    starts = torch.randint(0, stream.numel() - seq_len + 1, (samples,), generator=generator)
    index = starts[:, None] + torch.arange(seq_len)[None, :]
    return stream[index].to(torch.int64)


def check_data(data: str, folder: Path) -> None:
    """Refuse, without reading its content, a ``data`` that cannot calibrate ``folder``'s
    model: no such file, neither text nor token ids, text for a folder without a tokenizer."""
    kind = _kind(data)
    check_input(Path(data), f"--data {data}")
    if kind in TEXT_SUFFIXES:
        check_tokenizer_files(folder, data)


def _kind(data: str) -> str:
    if data == "-":
        raise BadInput(
            "--data - : calibration data is read from a file, not from stdin",
            "save it as .txt, .jsonl, .npz or .safetensors and pass that file",
        )
    suffix = Path(data).suffix.lower()
    if suffix not in ID_SUFFIXES + TEXT_SUFFIXES:
        raise BadInput(
            f"--data {data}: a transformer reads text (.txt, .jsonl) or token ids "
            "(.npz, .safetensors with input_ids)",
        )
    return suffix


def token_stream(data: str, folder: Path, trust_remote_code: bool = False) -> torch.Tensor:
    """Every token of ``data``, in order, as one 1-D int64 tensor."""
    suffix = _kind(data)
    if suffix in ID_SUFFIXES:
        return _ids_stream(data)
    _check_text_size(data)
    text = _read_text(data) if suffix == ".txt" else "\n\n".join(_jsonl_texts(data))
    ids = tokenize(load_tokenizer(folder, data, trust_remote_code), text, folder, data)
    return torch.tensor(ids, dtype=torch.int64)


def _check_text_size(data: str) -> None:
    """Refuse text too large to tokenize whole here: the tokenizer holds about
    ``_TOKENIZER_BYTES`` bytes per byte of text (its encodings: ids, offsets, token strings)
    until it returns, so a large corpus would be killed for memory rather than refused."""
    memory = _memory_bytes()
    size = check_input(Path(data), f"--data {data}").st_size
    if memory is not None and size * _TOKENIZER_BYTES > memory:
        raise BadInput(
            f"--data {data} is {size / 2**20:,.0f} MiB of text: tokenizing it whole takes about "
            f"{size * _TOKENIZER_BYTES / 2**30:,.0f} GiB, more than this machine's memory "
            f"({memory / 2**30:.1f} GiB)",
            "pass a part of it: the windows use at most --samples × --seq-len tokens",
        )


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _read_text(data: str) -> str:
    with open_input(Path(data), f"--data {data}") as handle:
        raw = handle.read()
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0  # as editors on Windows save UTF-8
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"--data {data} is not UTF-8 text (byte {bom + exc.start})") from None


def _jsonl_texts(data: str) -> list[str]:
    texts = []
    # lines end at "\n" only: a JSON string may hold U+2028, U+0085 or "\r" that
    # str.splitlines() would also split at
    for number, line in enumerate(_read_text(data).split("\n"), start=1):
        if not line.strip():
            continue
        # prunecli's one JSON reader: bounded nesting and digits, no NaN, no duplicate keys
        record = parse_json(line, f"--data {data} line {number}")
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise BadInput(
                f'--data {data} line {number} has no "text" field holding a string',
                'write one JSON object per line, e.g. {"text": "..."}',
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # "\ud800": an escape JSON allows, no character
            raise BadInput(
                f"--data {data} line {number}: its text holds an unpaired surrogate "
                f"(\\u{ord(text[exc.start]):04x}), which is not a character"
            ) from None
        texts.append(text)
    return texts


def _ids_stream(data: str) -> torch.Tensor:
    path = Path(data)
    check_input(path, f"--data {data}")
    arrays: dict[str, torch.Tensor]
    if path.suffix.lower() == ".npz":
        arrays = {
            key: _tensor(value, key, data)
            for key, value in read_npz(path, data).items()
            if key in ("input_ids", "attention_mask")
        }
    else:
        arrays, _ = load_file(path)
    ids = arrays.get("input_ids")
    if ids is None:
        raise BadInput(f"--data {data} has no input_ids", "store the token ids as input_ids")
    if ids.dim() != 2 or ids.dtype not in _INTEGERS:
        raise BadInput(
            f"--data {data}: input_ids must be a 2-D array of integers "
            f"(got {ids.dim()}-D {str(ids.dtype).removeprefix('torch.')})"
        )
    ids = _as_int64(ids, data)
    mask = arrays.get("attention_mask")
    if mask is None:
        return ids.reshape(-1)
    if tuple(mask.shape) != tuple(ids.shape):
        raise BadInput(
            f"--data {data}: attention_mask is {list(mask.shape)}, input_ids {list(ids.shape)}"
        )
    if mask.dtype.is_complex or not bool(((mask == 0) | (mask == 1)).all()):
        raise BadInput(
            f"--data {data}: attention_mask must hold only 0 (padding) and 1 (a token)",
            "store the tokenizer's attention_mask as it is, or leave it out",
        )
    return ids[mask != 0]


#: the dtypes token ids may be stored in
_INTEGERS = (
    torch.int8, torch.int16, torch.int32, torch.int64,
    torch.uint8, torch.uint16, torch.uint32, torch.uint64,
)  # fmt: skip


def _tensor(array: Any, name: str, data: str) -> torch.Tensor:
    """An .npz array as a tensor; one torch cannot hold (text, dates) refused by name."""
    if array.dtype.kind not in "biufc":
        raise BadInput(
            f"--data {data}: {name} holds {array.dtype} values, not numbers",
            "store input_ids (and attention_mask) as integer arrays",
        )
    if not array.dtype.isnative:  # saved big-endian: torch takes the machine's byte order only
        array = array.astype(array.dtype.newbyteorder("="))
    return torch.from_numpy(array)


def _as_int64(ids: torch.Tensor, data: str) -> torch.Tensor:
    """``ids`` as int64; an unsigned 64-bit id past int64's range refused as it is (a plain
    cast would wrap it to a negative id)."""
    if ids.dtype != torch.uint64:
        return ids.to(torch.int64)
    signed = ids.view(torch.int64)
    wrapped = signed[signed < 0]
    if wrapped.numel():
        raise BadInput(
            f"--data {data} holds token id {int(wrapped[0]) + 2**64}, outside any vocabulary",
            "the token ids must come from this model's tokenizer",
        )
    return signed
