"""Hostile and careless input to `prunecli prune FOLDER --method wanda|sparsegpt --data FILE`:
every case exits 2 (bad input) or 3 (unsupported) with one line naming what is wrong, writes
nothing, and runs no code from the folder. Each test builds its hostile input itself; the model
is one tiny Llama (2 blocks, width 16, vocabulary 32) with a word-level tokenizer."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    assert_refused,
    files_in,
    report_of,
    run_refused,
    write_llama,
    write_tokenizer,
)
from safetensors.torch import load_file, save_file

VOCAB = 32
WINDOWS = ("--samples", 2, "--seq-len", 8)
MARKER = "pwned-by-the-folder"  # a file the folder's code would create if it ran


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile-calibrated") / "llama"
    write_llama(folder, num_hidden_layers=2, vocab_size=VOCAB)
    return write_tokenizer(folder, VOCAB)


@pytest.fixture
def ids(workdir: Path) -> Path:
    """128 valid token ids (4 rows of 32)."""
    path = workdir / "ids.npz"
    np.savez(path, input_ids=np.random.default_rng(0).integers(0, VOCAB, (4, 32)))
    return path


def prune(model: Path, data: object, *extra: object, method: str = "wanda") -> tuple:
    return ("prune", model, "--method", method, "--data", data, "-o", "out", *extra)


def half(model: Path, data: object, *extra: object, method: str = "wanda") -> tuple:
    return prune(model, data, "--sparsity", 0.5, *WINDOWS, *extra, method=method)


def copy_of(model: Path, workdir: Path, edit: Callable[[Path], object]) -> Path:
    folder = Path(shutil.copytree(model, workdir / "copy"))
    edit(folder)
    return folder


def edit_tensors(folder: Path, change: Callable[[dict[str, torch.Tensor]], object]) -> None:
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def raw_safetensors(path: Path, header: dict, data: bytes) -> Path:
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


def npz(**arrays: np.ndarray) -> Callable[[Path], None]:
    return lambda path: np.savez(path, **arrays)


def text(content: str | bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(
        content if isinstance(content, bytes) else content.encode()
    )


def safetensors(**tensors: torch.Tensor) -> Callable[[Path], None]:
    return lambda path: save_file(tensors, str(path))


INTS = np.zeros((2, 20), dtype=np.int64)
# (file name, how to write it, exit code, what the message must say)
DATA_CASES = [
    # defects found here (were exit 70 or accepted)
    ("s.npz", npz(input_ids=np.array([["a"] * 20] * 2)), 2, "input_ids holds <U1 values, not numbers"),
    ("m.npz", npz(input_ids=INTS, attention_mask=np.array([["1"] * 20] * 2)), 2, "attention_mask holds <U1"),
    ("c.npz", npz(input_ids=INTS.astype(np.complex64)), 2, "2-D array of integers (got 2-D complex64)"),
    ("u.npz", npz(input_ids=np.full((2, 20), 2**64 - 1, np.uint64)), 2, "token id 18446744073709551615"),
    ("u.safetensors", safetensors(input_ids=torch.full((2, 20), 2**63, dtype=torch.uint64)), 2, "token id 9223372036854775808,"),
    ("n.safetensors", safetensors(input_ids=torch.zeros(2, 20, dtype=torch.int64), attention_mask=torch.full((2, 20), float("nan"))), 2, "attention_mask must hold only 0"),
    ("two.npz", npz(input_ids=INTS, attention_mask=np.full((2, 20), 2)), 2, "attention_mask must hold only 0"),
    ("deep.jsonl", text('{"text": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n"), 2, "line 1 is not acceptable JSON: it nests"),
    ("digits.jsonl", text('{"text": "a", "x": ' + "9" * 5000 + "}\n"), 2, "more than 1000 digits"),
    ("nan.jsonl", text('{"text": "the of and to a in is the of"}\n{"text": "a", "x": NaN}\n'), 2, "line 2 is not acceptable JSON: NaN"),
    ("twice.jsonl", text('{"text": "a", "text": "the of and to a in is the of"}\n'), 2, "key 'text' appears twice"),
    ("dates.npz", npz(input_ids=np.zeros((2, 20), "datetime64[s]")), 2, "input_ids holds datetime64[s] values"),
    ("lone.jsonl", text('{"text": "the \\ud800 of and to a in is"}\n'), 2, "unpaired surrogate (\\ud800)"),
    # already refused well
    ("empty.txt", text(""), 2, "holds 0 tokens; a window of --seq-len 8 needs at least 8"),
    ("blank.txt", text(" \n\n\t "), 2, "holds 0 tokens"),
    ("latin1.txt", text(b"caf\xe9 the of"), 2, "is not UTF-8 text (byte 3)"),
    ("bom.txt", text(b"\xef\xbb\xbfcaf\xe9 the of"), 2, "is not UTF-8 text (byte 6)"),
    ("zero.npz", text(b""), 2, "is not a readable .npz file"),
    ("pickle.npz", text(pickle.dumps({"input_ids": [[1, 2]]})), 2, "is not a readable .npz file"),
    ("one.npz", npz(input_ids=np.arange(40) % VOCAB), 2, "must be a 2-D array of integers (got 1-D int64)"),
    ("three.npz", npz(input_ids=np.zeros((2, 2, 20), np.int64)), 2, "(got 3-D int64)"),
    ("float.npz", npz(input_ids=INTS.astype(np.float32)), 2, "(got 2-D float32)"),
    ("bool.npz", npz(input_ids=INTS.astype(bool)), 2, "(got 2-D bool)"),
    ("neg.npz", npz(input_ids=INTS - 1), 2, "token id -1, outside the model's vocabulary (0 to 31)"),
    ("big.npz", npz(input_ids=INTS + VOCAB), 2, "token id 32, outside"),
    ("none.npz", npz(input_ids=np.zeros((0, 20), np.int64)), 2, "holds 0 tokens"),
    ("noids.npz", npz(ids=INTS), 2, "has no input_ids"),
    ("f16.safetensors", safetensors(input_ids=torch.zeros(2, 20, dtype=torch.float16)), 2, "(got 2-D float16)"),
    ("list.jsonl", text("[1, 2]\n"), 2, 'line 1 has no "text" field holding a string'),
    ("num.jsonl", text('{"text": "the of"}\n{"text": 5}\n'), 2, 'line 2 has no "text" field'),
    ("bad.jsonl", text('{"text": \n'), 2, "line 1 is not valid JSON"),
    ("ids.csv", text("1,2,3"), 2, "transformer reads text (.txt, .jsonl) or token ids"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "write", "code", "says"), DATA_CASES, ids=[case[0] for case in DATA_CASES]
)
def test_bad_calibration_data(cli, workdir: Path, model: Path, name, write, code, says) -> None:
    write(workdir / name)
    run_refused(cli, workdir, half(model, name), code, says)


def test_lying_safetensors_header_allocates_nothing(cli, workdir: Path, model: Path) -> None:
    entry = {"dtype": "I64", "shape": [10**6, 10**6], "data_offsets": [0, 80]}
    raw_safetensors(workdir / "lie.safetensors", {"input_ids": entry}, bytes(80))
    run_refused(cli, workdir, half(model, "lie.safetensors"), 2, "needs 8000000000000 bytes")


def test_special_data_paths(cli, workdir: Path, model: Path) -> None:
    (workdir / "folder.txt").mkdir()
    os.symlink("loop.txt", workdir / "loop.txt")
    os.mkfifo(workdir / "pipe.txt")  # opened, it would block until a writer came
    os.symlink("/dev/zero", workdir / "zero.txt")  # read, it would never end
    cases = [
        ("folder.txt", "--data folder.txt is a folder"),
        ("loop.txt", "it is a loop of symbolic links"),
        ("pipe.txt", "it is a named pipe (FIFO)"),
        ("/dev/zero", "transformer reads text"),
        ("zero.txt", "it is a character device"),
        ("-", "calibration data is read from a file, not from stdin"),
        ("missing.npz", "--data missing.npz does not exist"),
    ]
    for data, says in cases:
        run_refused(cli, workdir, half(model, data), 2, says)
    for data, says in cases[2:6]:  # --dry-run checks the path without reading it
        run_refused(cli, workdir, (*half(model, data), "--dry-run"), 2, says)
    assert_refused(cli(*half(model, "-")[:4], "-o", "out", "--sparsity", 0.5), 2, "pass --data")


def test_more_windows_than_the_tokens_hold(cli, workdir: Path, model: Path, ids: Path) -> None:
    # 128 tokens hold 121 different windows of 8: 200 would repeat the same text
    args = prune(model, ids.name, "--sparsity", 0.5, "--samples", 200, "--seq-len", 8)
    says = (
        "holds 128 tokens: room for 121 different windows of --seq-len 8, fewer than --samples 200"
    )
    run_refused(cli, workdir, args, 2, says)


def test_windows_beyond_memory_are_refused_before_reading(
    cli, workdir: Path, model: Path, ids: Path
) -> None:
    samples = 10**11  # × 8 tokens × (8 + 2 × 4 × 16) bytes: 100 TiB of activations
    args = prune(model, ids.name, "--sparsity", 0.5, "--samples", samples, "--seq-len", 8)
    run_refused(cli, workdir, args, 2, "GiB of activations, more than this machine's memory")


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--samples", 0), "--samples must be at least 1 (got 0)"),
        (("--samples", -3), "--samples must be at least 1 (got -3)"),
        (("--seq-len", 0), "--seq-len must be at least 1 (got 0)"),
        (("--seq-len", 33), "--seq-len 33 is longer than the model takes (32 positions)"),
        (("--device", "bogus"), "--device 'bogus' is not known"),
        (("--device", "meta"), "--device 'meta' is not known"),
        (("--scope", "owl", "--owl-lambda", "nan"), "--owl-lambda must be a finite number >= 0"),
        (("--scope", "owl", "--owl-m", "-1"), "--owl-m must be a finite number > 0"),
        (("--pattern", "2:3"), "has rows of 16 inputs, not a multiple of 3"),
    ],
)
def test_bad_options(cli, workdir: Path, model: Path, ids: Path, flags, says) -> None:
    goal = () if "--pattern" in flags else ("--sparsity", 0.5)
    run_refused(cli, workdir, prune(model, ids.name, *goal, *flags), 2, says)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("nan", "--dampening must be a finite number >= 0, got nan"),
        ("-1", "--dampening must be a finite number >= 0, got -1.0"),
        ("1e308", "--dampening 1e+308 makes the inverse Hessian of model.layers.0."),
    ],
)
def test_bad_dampening(cli, workdir: Path, model: Path, ids: Path, value: str, says: str) -> None:
    args = half(model, ids.name, "--dampening", value, method="sparsegpt")
    run_refused(cli, workdir, args, 2, says)


def test_cuda_without_cuda(cli, workdir: Path, model: Path, ids: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    args = half(model, ids.name, "--device", "cuda")
    run_refused(cli, workdir, args, 2, "--device cuda was asked for, but no CUDA device")


def test_quantized_weights_are_unsupported(cli, workdir: Path, model: Path, ids: Path) -> None:
    name = "model.layers.1.mlp.up_proj.weight"

    def quantize(tensors: dict[str, torch.Tensor]) -> None:
        tensors[name] = tensors[name].to(torch.int8)

    folder = copy_of(model, workdir, lambda f: edit_tensors(f, quantize))
    run_refused(cli, workdir, half(folder, ids.name), 3, f"{name} is stored as int8")


def test_non_finite_embeddings_are_named(cli, workdir: Path, model: Path) -> None:
    def poison(tensors: dict[str, torch.Tensor]) -> None:
        tensors["model.embed_tokens.weight"][0, 3] = float("inf")

    folder = copy_of(model, workdir, lambda f: edit_tensors(f, poison))
    np.savez(workdir / "zeros.npz", input_ids=np.zeros((2, 20), np.int64))  # token 0 used
    run_refused(cli, workdir, half(folder, "zeros.npz"), 2, "the embeddings give NaN or inf")


def test_nan_block_is_named_and_old_output_kept(cli, workdir: Path, model: Path, ids: Path) -> None:
    def poison(tensors: dict[str, torch.Tensor]) -> None:
        tensors["model.layers.1.self_attn.q_proj.weight"][0, 0] = float("nan")

    assert cli(*half(model, ids.name, "-q")).exit_code == 0  # the last run's output
    folder = copy_of(model, workdir, lambda f: edit_tensors(f, poison))
    for method in ("wanda", "sparsegpt"):  # run_refused: "out" keeps every byte, no temporary
        args = half(folder, ids.name, "--force", method=method)
        run_refused(cli, workdir, args, 2, "block model.layers.1 gives NaN or infinite")


def test_folder_code_never_runs(cli, workdir: Path, model: Path, ids: Path) -> None:
    """auto_map in config.json or tokenizer_config.json: refused (exit 3), its module never
    imported; a Jinja chat template is never rendered (the run succeeds, nothing executed)."""
    code = f"open({str(workdir / MARKER)!r}, 'w').close()\nclass Evil: pass\n"

    def remote(file: str, auto_map: object) -> Callable[[Path], None]:
        def edit(folder: Path) -> None:
            (folder / "evil.py").write_text(code)
            settings = json.loads((folder / file).read_text())
            (folder / file).write_text(json.dumps({**settings, "auto_map": auto_map}))

        return edit

    folder = copy_of(model, workdir, remote("config.json", {"AutoConfig": "evil.Evil"}))
    run_refused(cli, workdir, half(folder, ids.name), 3, "auto_map: evil.Evil")
    shutil.rmtree(folder)
    (workdir / "corpus.txt").write_text("the of and to a in is " * 20)
    tokenizer = remote("tokenizer_config.json", {"AutoTokenizer": ["evil.Evil", None]})
    folder = copy_of(model, workdir, tokenizer)
    run_refused(cli, workdir, half(folder, "corpus.txt"), 3, "tokenizer_config.json names")
    shutil.rmtree(folder)
    jinja = "{{ cycler.__init__.__globals__.os.system('touch " + str(workdir / MARKER) + "') }}"

    def template(folder: Path) -> None:
        settings = json.loads((folder / "tokenizer_config.json").read_text())
        settings["chat_template"] = jinja
        (folder / "tokenizer_config.json").write_text(json.dumps(settings))
        (folder / "chat_template.jinja").write_text(jinja)

    folder = copy_of(model, workdir, template)
    result = cli(*half(folder, "corpus.txt"), "-q")
    assert result.exit_code == 0, result.stderr
    assert not (workdir / MARKER).exists()


def test_shard_outside_the_folder(cli, workdir: Path, ids: Path) -> None:
    folder = write_llama(workdir / "sharded", max_shard_size="4KB", num_hidden_layers=2)
    index_file = folder / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    shutil.move(folder / first, workdir / "outside.safetensors")
    for name, shard in index["weight_map"].items():
        if shard == first:
            index["weight_map"][name] = "../outside.safetensors"
    index_file.write_text(json.dumps(index))
    run_refused(cli, workdir, half(folder, ids.name), 2, "'../outside.safetensors' outside")


@pytest.mark.parametrize(
    ("edit", "code", "says"),
    [
        (lambda c: c.update(num_hidden_layers=10**9), 2, "claims more layers than the folder"),
        (lambda c: c.update(num_hidden_layers=3), 2, "lacks tensor 'model.layers.2."),
        (lambda c: c.update(hidden_size=-16), 2, "transformers cannot build this model"),
        (lambda c: c.update(hidden_size=0), 2, "says hidden_size 0 but model.embed_tokens"),
        (lambda c: c.update(model_type="no_such_model"), 2, "transformers cannot build"),
        (lambda c: c.update(vocab_size=64), 2, "says vocab_size 64 but model.embed_tokens"),
        (lambda c: [c], 2, "config.json must hold a JSON object"),
    ],
)
def test_config_that_lies(cli, workdir: Path, model: Path, ids: Path, edit, code, says) -> None:
    def rewrite(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(edit(config) or config))

    folder = copy_of(model, workdir, rewrite)
    run_refused(cli, workdir, half(folder, ids.name), code, says)


def test_outputs_that_would_clobber(cli, workdir: Path, model: Path, ids: Path) -> None:
    copy = Path(shutil.copytree(model, workdir / "model"))
    (workdir / "afile").write_text("kept")
    before = files_in(workdir)
    for output, says in [
        ("model", "output model is the input folder"),
        ("model/sub", "lies inside the input folder"),
        ("afile", "output afile is a file, and the input is a folder"),
        ("-", "-o - cannot be"),
        (ids.name, "is the input file given to --data"),
    ]:
        args = ("prune", copy, "--method", "wanda", "--sparsity", 0.5, "--data", ids.name)
        assert_refused(cli(*args, *WINDOWS, "-o", output, "--force"), 2, says)
    assert files_in(workdir) == before
    assert (workdir / "afile").read_text() == "kept"


def test_json_lines_end_at_newlines_only(cli, workdir: Path, model: Path) -> None:
    """U+2028, U+0085 and a lone "\\r" are allowed raw inside a JSON string (str.splitlines()
    would cut the line there); "\\r\\n" line ends and a leading byte-order mark are read too."""
    from tokenizers import Tokenizer

    texts = ["the of and\u2028to a in is the", "of\x85and to\ra in is the of and"]
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in texts]
    # as Notepad saves it: a byte-order mark first, "\r\n" line ends
    (workdir / "raw.jsonl").write_text("\ufeff" + "\r\n".join(lines) + "\r\n", newline="")
    result = cli(*half(model, "raw.jsonl"), "--json")
    assert result.exit_code == 0, result.stderr
    tokens = Tokenizer.from_file(str(model / "tokenizer.json")).encode("\n\n".join(texts)).ids
    assert report_of(result)["pruning"]["calibration_tokens"] == len(tokens)


def test_oversized_text_and_tokenizer_files_are_refused_unread(
    cli, workdir: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prunecli.calibration import data
    from prunecli.io.jsonfile import MAX_BYTES

    folder = copy_of(model, workdir, lambda f: os.truncate(f / "tokenizer.json", MAX_BYTES + 1))
    (workdir / "corpus.txt").write_text("the of and to a in is " * 20)
    says = f"tokenizer.json is {MAX_BYTES + 1:,} bytes, more than the {MAX_BYTES:,}"
    run_refused(cli, workdir, half(folder, "corpus.txt"), 2, says)
    # 20 MiB of text, 2 GiB to tokenize, on a machine of 1 GiB (sparse: nothing is written)
    monkeypatch.setattr(data, "_memory_bytes", lambda: 2**30)
    with open(workdir / "big.txt", "wb") as handle:
        handle.truncate(20 * 2**20)
    says = "big.txt is 20 MiB of text: tokenizing it whole takes about 2 GiB"
    run_refused(cli, workdir, half(model, "big.txt"), 2, says)


def test_big_endian_ids_are_read(cli, workdir: Path, model: Path) -> None:
    """An .npz saved big-endian (another machine, or an explicit dtype) holds the same ids:
    the run prunes as from the native file, byte for byte (it exited 70)."""
    ids = np.random.default_rng(0).integers(0, VOCAB, (4, 32))
    np.savez(workdir / "native.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    np.savez(
        workdir / "big.npz", input_ids=ids.astype(">i8"), attention_mask=np.ones(ids.shape, ">f4")
    )
    for name in ("native", "big"):
        args = ("prune", model, "--method", "wanda", "--sparsity", 0.5, "--data", f"{name}.npz")
        result = cli(*args, *WINDOWS, "-o", name, "-q")
        assert result.exit_code == 0, result.stderr
    assert (workdir / "big" / "model.safetensors").read_bytes() == (
        workdir / "native" / "model.safetensors"
    ).read_bytes()


def test_tokenizer_that_panics_says_one_line(
    cli, workdir: Path, model: Path, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder's tokenizer.json with a regular expression that backtracks without end: the
    Rust library stops at its retry limit with a panic (a BaseException), printing it and,
    under RUST_BACKTRACE=1, a backtrace on file descriptor 2 itself: one line, exit 2, nothing
    written, nothing on the descriptor."""

    def backtracking(folder: Path) -> None:
        settings = json.loads((folder / "tokenizer.json").read_text())
        split = {"type": "Split", "pattern": {"Regex": "(a|aa)+$"}, "behavior": "Isolated"}
        settings["pre_tokenizer"] = {**split, "invert": False}
        (folder / "tokenizer.json").write_text(json.dumps(settings))

    folder = copy_of(model, workdir, backtracking)
    (workdir / "a.txt").write_text("a" * 60 + "b the of and to a in is the of and to")
    monkeypatch.setenv("RUST_BACKTRACE", "1")
    capfd.readouterr()
    result = run_refused(cli, workdir, half(folder, "a.txt"), 2, "the tokenizer of ")
    assert "retry-limit-in-match" in result.stderr
    assert capfd.readouterr().err == ""  # the panic's own lines went nowhere
