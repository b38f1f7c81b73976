"""Shared fixtures: run the CLI as a user would, and write small models into tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import Result
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from prunecli.cli.app import app
from prunecli.models.zoo import build_arch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` (the README's test command): N workers share the cores, so each computes on
    # one thread, and so do the processes tests start (without this, 2 workers × 2 threads on 2
    # cores ran the suite 1.3× slower)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

SMALL_MLP = {"widths": [12, 16, 8, 4]}  # fc1 16×12, fc2 8×16, fc3 4×8: 352 prunable weights


class Cli:
    """``prunecli ARGS`` in-process through Typer's runner; stderr is kept apart from stdout."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: object, input: bytes | str | None = None) -> Result:
        # catch_exceptions=False: an exception that escapes the CLI fails the test loudly
        return self.runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.delenv("PRUNECLI_DEBUG", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    return Cli()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the current folder, so default output names land in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_zoo(
    path: Path, arch: str = "mlp", kwargs: Mapping[str, Any] | None = None, seed: int = 0
) -> Path:
    """A freshly initialised zoo model with its architecture in the metadata, as `init` writes."""
    torch.manual_seed(seed)
    built = build_arch(arch, dict(kwargs or {}))
    tensors = {
        name: t.detach().clone().contiguous() for name, t in built.module.state_dict().items()
    }
    metadata = {
        "format": "pt",
        "prunecli.arch": arch,
        "prunecli.arch_kwargs": json.dumps(dict(kwargs or {}), sort_keys=True),
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def write_weights(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """A weights-only safetensors file (no architecture unless ``metadata`` names one)."""
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=dict(metadata or {})
    )
    return path


def write_llama(folder: Path, max_shard_size: str | None = None, **sizes: int) -> Path:
    """A small Llama saved with ``save_pretrained`` (seed 0); ``sizes`` override the config's
    (by default one layer of width 16, vocabulary 32). Skips the test without transformers."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        **{
            "vocab_size": 32,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32,
            **sizes,
        }
    )
    shards = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    transformers.LlamaForCausalLM(config).save_pretrained(folder, **shards)
    return folder


def write_method_inputs(folder: Path) -> Path:
    """What the training methods' CLI tests start from: ``data.npz`` (240 samples of 12
    features, three classes from the signs of the first two) and ``init.safetensors``, a fresh
    SMALL_MLP. Returns ``folder``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 12)).astype(np.float32)
    np.savez(folder / "data.npz", x=x, y=(x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0))
    write_zoo(folder / "init.safetensors", "mlp", SMALL_MLP)
    return folder


@pytest.fixture
def mlp_file(workdir: Path) -> Path:
    return write_zoo(workdir / "model.safetensors", "mlp", SMALL_MLP)


def metadata_of(path: Path) -> dict[str, str]:
    """A safetensors file's header metadata ({} when it has none)."""
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def files_in(folder: Path) -> set[str]:
    """Every entry under ``folder``, hidden temporaries included."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def assert_refused(result: Result, code: int, *fragments: str) -> None:
    """The exit code, a short message that says what is wrong, no traceback, nothing on stdout."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    message = result.stderr
    assert message.startswith("prunecli: error: "), message
    assert len(message.strip().splitlines()) <= 2, message
    assert "Traceback" not in message + result.stdout
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def run_refused(cli, folder: Path, args: tuple[object, ...], code: int, *fragments: str) -> Result:
    """Run ``prunecli ARGS``; it must be refused and leave the folder exactly as it was."""
    before = files_in(folder)
    contents = {name: (folder / name).read_bytes() for name in before if (folder / name).is_file()}
    result = cli(*args)
    assert_refused(result, code, *fragments)
    assert files_in(folder) == before  # no output, no leftover .tmp
    for name, data in contents.items():
        assert (folder / name).read_bytes() == data  # inputs and old outputs untouched
    return result


def zeros(tensor: torch.Tensor) -> int:
    return int((tensor == 0).sum())


def prunable_total(tensors: Mapping[str, torch.Tensor], names: Sequence[str]) -> int:
    return sum(tensors[name].numel() for name in names)


def report_of(result: Result, stream: str = "stdout") -> dict[str, Any]:
    """The JSON report a command printed, checked for its schema."""
    document = json.loads(getattr(result, stream))
    assert document["schema"] == "prunecli.report/1"
    return document


@pytest.fixture
def fresh_module_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], str]:
    """Write ``source`` as a uniquely named module on sys.path; returns the module's name.

    Unique names: Python caches imported modules, and every test must see its own source.
    """
    folder = tmp_path / "pymods"
    folder.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(folder))
    counter = iter(range(1000))

    def make(stem: str, source: str) -> str:
        name = f"{stem}_{tmp_path.name.replace('-', '_')}_{next(counter)}"
        (folder / f"{name}.py").write_text(source)
        return name

    return make


def write_tokenizer(folder: Path, vocab_size: int = 32) -> Path:
    """A word-level tokenizer of at most ``vocab_size`` tokens (``[UNK]`` is id 0), trained
    offline on ``pydoc_data``'s English text and saved into ``folder`` as ``save_pretrained``
    does. Skips the test without transformers."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=["[UNK]"])
    tokenizer.train_from_iterator(pydoc_texts(), trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]")
    fast.save_pretrained(folder)
    return folder


def pydoc_texts() -> list[str]:
    """English text that ships with Python (the help topics, about 460 kB), in a fixed order."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def write_calibrated_llama(root: Path, **sizes: Any) -> Path:
    """A Llama folder with a tokenizer (``root/llama``) and calibration text beside it
    (``root/corpus.txt``: 40 help topics): what calibrated-pruning tests prune."""
    folder = write_llama(root / "llama", **sizes)
    write_tokenizer(folder, sizes.get("vocab_size", 32))
    (root / "corpus.txt").write_text("\n\n".join(pydoc_texts()[:40]), encoding="utf-8")
    return folder


def pipe_prune_into_inspect(source: Path, *flags: str) -> dict[str, Any]:
    """The real pipe, two processes: `prunecli prune SOURCE FLAGS -o - -q | prunecli inspect -
    --json`; both must exit 0. The report `inspect` printed."""
    prune = subprocess.Popen(
        [sys.executable, "-m", "prunecli", "prune", str(source), *flags, "-o", "-", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    inspect = subprocess.run(
        [sys.executable, "-m", "prunecli", "inspect", "-", "--json"],
        stdin=prune.stdout,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert prune.stdout is not None
    prune.stdout.close()
    assert prune.wait(timeout=120) == 0, prune.stderr.read() if prune.stderr else ""
    assert inspect.returncode == 0, inspect.stderr
    return json.loads(inspect.stdout)
