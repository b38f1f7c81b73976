"""A transformer folder's own tokenizer, loaded from its files and run on calibration text.

Only the folder's files are read (never the network); a tokenizer naming the folder's own
Python code (``auto_map``) is refused unless trusted; its files are bounded in size before
transformers reads them whole; and whatever the tokenizer raises on the text, a Python error
or a panic of its Rust library (a regular expression of the folder's that backtracks without
end stops at Oniguruma's retry limit with a panic), is said in one line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prunecli.errors import BadInput, Unsupported
from prunecli.io.jsonfile import MAX_BYTES
from prunecli.io.pt2 import quiet_torch

# the files a saved tokenizer leaves in its folder (any one of them)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
)
# the other files transformers may read to build a tokenizer
_TOKENIZER_EXTRAS = (
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


def load_tokenizer(folder: Path, data: str, trust_remote_code: bool = False) -> Any:
    """The folder's own tokenizer, from its files only (no network, no code of its own unless
    trusted)."""
    check_tokenizer_files(folder, data)
    _check_tokenizer_sizes(folder)
    config_file = folder / "tokenizer_config.json"
    if config_file.is_file():
        from prunecli.io.jsonfile import read_json_file
        from prunecli.models.hf import REMOTE_CODE_HINT, remote_code

        named = remote_code(_as_dict(read_json_file(config_file)))
        if named and not trust_remote_code:
            raise Unsupported(
                f"{config_file} names the folder's own Python code (auto_map: {named[0]}), "
                "which prunecli does not run on its own",
                REMOTE_CODE_HINT,
            )
    try:
        import transformers
    except ImportError:
        from prunecli.models.hf import INSTALL_HINT

        raise Unsupported(f"tokenizing --data {data} needs transformers", INSTALL_HINT) from None
    try:
        with quiet_torch():
            return transformers.AutoTokenizer.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=trust_remote_code
            )
    except Exception as exc:  # noqa: BLE001 - tokenizers fail in many ways on bad files
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(f"cannot load the tokenizer of {folder}: {detail}") from None


def check_tokenizer_files(folder: Path, data: str) -> None:
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise BadInput(
            f"--data {data} is text, but {folder} has no tokenizer to turn it into tokens",
            "pass token ids instead: a .npz or .safetensors file with a 2-D input_ids",
        )


def _check_tokenizer_sizes(folder: Path) -> None:
    """transformers reads a tokenizer's files whole, holding twice their size or more (a 2 GB
    sparse tokenizer.json took 4.6 GB and 46 s to fail): each is bounded as prunecli bounds
    any JSON it reads. Real ones are far smaller (the largest known, about 35 MB)."""
    for name in (*_TOKENIZER_FILES, *_TOKENIZER_EXTRAS):
        try:
            size = os.stat(folder / name).st_size
        except OSError:
            continue  # absent, or unreadable: transformers says so
        if size > MAX_BYTES:
            raise BadInput(
                f"{folder / name} is {size:,} bytes, more than the {MAX_BYTES:,} a tokenizer "
                "file may hold",
                "check the folder's tokenizer files",
            )


def _as_dict(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def tokenize(tokenizer: Any, text: str, folder: Path, data: str) -> list[int]:
    """The ids of ``text`` (one call: the whole text is one stream)."""
    try:
        # quiet: "sequence longer than the model's maximum" (the windows are cut after);
        # fd 2 closed: a Rust panic prints its message (and a backtrace) there itself
        with quiet_torch(), _no_native_stderr():
            return list(tokenizer(text)["input_ids"])
    except Exception as exc:  # noqa: BLE001 - a tokenizer of the folder's may raise anything
        raise _failed(folder, data, exc) from None
    except BaseException as exc:  # pyo3's PanicException derives from BaseException
        if type(exc).__name__ != "PanicException":
            raise
        raise _failed(folder, data, exc) from None


def _failed(folder: Path, data: str, exc: BaseException) -> BadInput:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BadInput(
        f"the tokenizer of {folder} failed on --data {data}: {detail}",
        "check the folder's tokenizer files, or pass token ids (.npz, .safetensors)",
    )


@contextmanager
def _no_native_stderr() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the duration (Python's sys.stderr too, as it
    writes there); restored after."""
    try:
        saved = os.dup(2)
        quiet = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    sys.stderr.flush()
    os.dup2(quiet, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(quiet)
