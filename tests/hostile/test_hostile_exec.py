"""Issue 12, code execution: no model file runs code, and no config builds a model the stored
tensors cannot fill. Each test builds its hostile input itself; the code-execution tests assert
that a marker file the payload would create does not appear."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import assert_refused, run_refused, write_llama, write_weights

REPO = Path(__file__).resolve().parents[2]


class _Touch:
    """Unpickling this creates ``path``: the proof that something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def _program(folder: Path, dynamic: bool = False) -> Path:
    """A small saved torch.export program: a Linear, a buffer and a tensor constant."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(6, 4)
            self.register_buffer("shift", torch.ones(4))
            self.const = torch.full((4,), 0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + self.shift + self.const

    torch.manual_seed(0)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(Net(), (torch.randn(2, 6),), dynamic_shapes=shapes)
    path = folder / "good.pt2"
    torch.export.save(program, str(path))
    return path


Edit = Callable[[str, bytes], "bytes | None"]


def _tamper(source: Path, target: Path, edit: Edit, extra: dict[str, bytes] | None = None) -> Path:
    """Copy the archive member by member; ``edit(record, data)`` may replace a member's bytes
    (``record`` is its name under the archive's top folder, as torch's reader sees it)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        top = old.namelist()[0].split("/", 1)[0]
        for info in old.infolist():
            record = info.filename.split("/", 1)[1]
            data = edit(record, old.read(info))
            new.writestr(info, old.read(info) if data is None else data)
        for record, data in (extra or {}).items():
            new.writestr(f"{top}/{record}", data)
    return target


def _config(data: bytes, change: Callable[[dict], None]) -> bytes:
    value = json.loads(data)
    change(value)
    return json.dumps(value).encode()


def _pickled_weight(marker: Path) -> Edit:
    def edit(record: str, data: bytes) -> bytes | None:
        if record == "data/weights/weight_0":
            return pickle.dumps(_Touch(marker))
        if record == "data/weights/model_weights_config.json":
            return _config(data, lambda c: c["config"]["fc.weight"].update(use_pickle=True))
        return None

    return edit


def _opaque_constant(marker: Path) -> Edit:
    def edit(record: str, data: bytes) -> bytes | None:
        if record == "data/constants/model_constants_config.json":
            return _config(data, lambda c: c["config"]["const"].update(path_name="opaque_obj_0"))
        return None

    return edit


def _evil_inputs(marker: Path) -> Edit:
    return lambda record, data: (
        pickle.dumps(_Touch(marker)) if record == "data/sample_inputs/model.pt" else None
    )


def _json_edit(old: str, new: str) -> Edit:
    def edit(record: str, data: bytes) -> bytes | None:
        if record != "models/model.json":
            return None
        text = data.decode()
        assert old in text
        return text.replace(old, new).encode()

    return edit


def _touch_code(marker: Path) -> str:
    """Python that creates ``marker``, written with no quote character (it goes into JSON)."""
    codes = "+".join(f"chr({ord(c)})" for c in str(marker))
    return f"open({codes},chr(119))"


PAYLOADS: dict[str, Callable[[Path], tuple[Edit, dict[str, bytes]]]] = {
    "use_pickle weight": lambda m: (_pickled_weight(m), {}),
    "opaque_obj constant": lambda m: (
        _opaque_constant(m),
        {"data/constants/opaque_obj_0": pickle.dumps(_Touch(m))},
    ),
    "custom_obj constant": lambda m: (
        lambda r, d: (
            _config(d, lambda c: c["config"]["const"].update(path_name="custom_obj_0"))
            if r == "data/constants/model_constants_config.json"
            else None
        ),
        {"data/constants/custom_obj_0": pickle.dumps(_Touch(m))},
    ),
    "pickled example inputs": lambda m: (_evil_inputs(m), {}),
    "legacy weights file": lambda m: (
        lambda r, d: None,
        {"data/weights/model.pt": pickle.dumps(_Touch(m))},
    ),
    "sympy expression": lambda m: (
        _json_edit(
            '"expr_str": "Symbol(\'s77\', positive=True, integer=True)"',
            f'"expr_str": "{_touch_code(m)} and s77"',
        ),
        {},
    ),
    "placeholder name": lambda m: (_json_edit('"x"', f'"x={_touch_code(m)}"'), {}),
    "guards code": lambda m: (
        _json_edit('"guards_code": []', f'"guards_code": ["{_touch_code(m)} == 0"]'),
        {},
    ),
    "native code": lambda m: (lambda r, d: None, {"data/aotinductor/model/model.so": b"\x7fELF"}),
}


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_pt2_payloads_never_run(cli, workdir: Path, kind: str) -> None:
    marker = workdir / "marker"
    good = _program(workdir, dynamic=kind in ("sympy expression", "placeholder name"))
    edit, extra = PAYLOADS[kind](marker)
    _tamper(good, workdir / "evil.pt2", edit, extra)
    good.unlink()
    for args in (
        ("inspect", "evil.pt2"),
        ("prune", "evil.pt2", "-m", "magnitude", "-s", "0.5", "-o", "o.pt2"),
        ("prune", "evil.pt2", "-m", "synflow", "-s", "0.5", "-o", "o.pt2"),
        ("export", "evil.pt2", "--to", "pt2", "-o", "o.pt2"),
    ):
        run_refused(cli, workdir, args, 2, "evil.pt2")
        assert not marker.exists(), (kind, args)


def test_pt2_pickle_refusal_says_why(cli, workdir: Path) -> None:
    good = _program(workdir)
    _tamper(good, workdir / "evil.pt2", _pickled_weight(workdir / "marker"))
    result = cli("inspect", "evil.pt2")
    assert_refused(result, 2, "fc.weight", "holds objects other than tensors", "does not unpickle")


def test_pt2_harmless_pickle_prints_one_line(workdir: Path) -> None:
    """A pickled int as weight_0 made torch log a 21-line traceback: torch's own log lines and
    warnings never reach the user (a real process: the logging handlers are the real ones)."""
    good = _program(workdir)

    def edit(record: str, data: bytes) -> bytes | None:
        if record == "data/weights/weight_0":
            return pickle.dumps(7)
        return None

    _tamper(good, workdir / "int.pt2", edit)
    # and one whose weight bytes do not fit their dtype: torch's loader fails inside
    _tamper(
        good, workdir / "odd.pt2", lambda r, d: d[:-1] if r == "data/weights/weight_0" else None
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PRUNECLI_DEBUG", None)
    for name in ("int.pt2", "odd.pt2", "good.pt2"):
        run = subprocess.run(
            [sys.executable, "-m", "prunecli", "inspect", name, "-q"],
            cwd=workdir, capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        if name == "good.pt2":
            assert (run.returncode, run.stderr) == (0, "")
            continue
        assert run.returncode == 2, run.stderr
        assert len(run.stderr.strip().splitlines()) <= 2, run.stderr
        assert run.stderr.startswith("prunecli: error: "), run.stderr


def test_pt2_programs_torch_writes_still_load(cli, workdir: Path) -> None:
    good = _program(workdir, dynamic=True)
    assert cli("inspect", good, "-q").exit_code == 0
    result = cli("prune", good, "-m", "synflow", "-s", "0.5", "-o", "o.pt2", "-q")
    assert result.exit_code == 0, result.stderr
    assert cli("inspect", "o.pt2", "-q").exit_code == 0


# --- Hugging Face folders ------------------------------------------------------------------------


def _remote_code_folder(workdir: Path, marker: Path) -> Path:
    """A real small model whose config.json names the folder's own code (auto_map); importing
    that code creates ``marker``."""
    folder = write_llama(workdir / "remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    config["architectures"] = ["EvilModel"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(
        textwrap.dedent(
            f"""
            open({str(marker)!r}, "w").write("ran")
            from transformers import LlamaConfig, LlamaForCausalLM

            class EvilConfig(LlamaConfig):  # subclasses: transformers marks what it loads
                pass

            class EvilModel(LlamaForCausalLM):
                config_class = EvilConfig
            """
        )
    )
    return folder


def test_auto_map_code_never_runs_without_opt_in(cli, workdir: Path) -> None:
    marker = workdir.parent / f"{workdir.name}-remote-ran"
    _remote_code_folder(workdir, marker)
    graph = ("--data", "digits", "-q")
    for args in (
        ("prune", "remote", "-m", "snip", "-s", "0.5", "-o", "o", *graph),
        ("score", "remote", "-m", "snip", "-o", "s.safetensors", *graph),
        ("retrain", "remote", "--epochs", "1", "-o", "r", *graph),
        ("export", "remote", "--to", "pt2", "-o", "x.pt2"),
        ("export", "remote", "--to", "pt2", "-o", "x.pt2", "--json"),
    ):
        result = cli(*args, input="y\n")  # what a user would answer to transformers' prompt
        assert_refused(result, 3, "auto_map", "--trust-remote-code")
        assert not marker.exists(), args
    # weights-only work goes on without the folder's code
    for args in (
        ("inspect", "remote", "--json"),
        ("prune", "remote", "-m", "magnitude", "-s", "0.5", "-o", "m", "-q"),
    ):
        result = cli(*args, input="y\n")
        assert result.exit_code == 0, result.stderr
        assert "custom code" not in result.stdout + result.stderr
    assert not marker.exists()


def test_auto_map_runs_only_with_trust_remote_code(cli, workdir: Path) -> None:
    marker = workdir / "remote-ran"
    _remote_code_folder(workdir, marker)
    for command in ("prune", "score", "retrain", "export", "inspect"):
        assert "--trust-remote-code" in cli(command, "--help").stdout
    args = ("prune", "remote", "-m", "snip", "-s", "0.5", "--data", "digits", "-o", "o", "-q")
    result = cli(*args, "--trust-remote-code")
    assert result.exit_code == 0, result.stderr
    assert marker.exists()  # asked for explicitly: the folder's code built the model


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("embed_tokens.weight", "vocab_size 32000, hidden_size 4096"),
        ("model.layers.0.mlp.up_proj.weight", "intermediate_size 11008"),
    ],
)
def test_minimal_config_is_compared_before_building(cli, workdir: Path, name: str, said: str):
    """{"model_type": "llama"} beside one 8×8 tensor built a default 7B Llama (OOM-killed): the
    model is now built on the meta device and compared with the stored shapes first."""
    pytest.importorskip("transformers")
    folder = workdir / "mini"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    write_weights(folder / "model.safetensors", {name: torch.randn(8, 8)})
    if name.startswith("model."):  # a causal-LM layout
        (folder / "config.json").write_text(
            '{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}'
        )
    args = ("prune", "mini", "-m", "snip", "-s", "0.5", "--data", "digits", "-o", "o")
    result = run_refused(cli, workdir, args, 2, "config.json says", said, f"{name} is 8×8")
    assert "Traceback" not in result.stderr


def test_config_with_tensors_it_lacks_is_refused_before_building(cli, workdir: Path) -> None:
    folder = write_llama(workdir / "small")
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 4000  # 4000 layers the folder does not store
    (folder / "config.json").write_text(json.dumps(config))
    args = ("prune", "small", "-m", "snip", "-s", "0.5", "--data", "digits", "-o", "o")
    run_refused(cli, workdir, args, 2, "lacks tensor", "model.layers.1.")


# --- architectures: sizes checked before building, import paths and factories ------------------


HUGE = '{"widths": [1000000000, 1000000000]}'  # a 10^18-weight Linear: exabytes


def test_huge_arch_kwargs_are_compared_on_the_meta_device(cli, workdir: Path) -> None:
    small = {"fc1.weight": torch.randn(8, 8), "fc1.bias": torch.randn(8)}
    write_weights(workdir / "w.safetensors", small)
    prune = ("-m", "magnitude", "-s", "0.5", "-o", "o.safetensors")
    args = ("prune", "w.safetensors", "--arch", "mlp", "--arch-kwargs", HUGE, *prune)
    run_refused(cli, workdir, args, 2, "'fc1.weight'", "[8, 8]", "[1000000000, 1000000000]")
    meta = {"prunecli.arch": "mlp", "prunecli.arch_kwargs": HUGE}
    write_weights(workdir / "m.safetensors", small, meta)
    for command in (("inspect", "m.safetensors"), ("prune", "m.safetensors", *prune)):
        run_refused(cli, workdir, command, 2, "does not fit mlp", "[1000000000, 1000000000]")
    args = ("init", "mlp", "--arch-kwargs", HUGE, "-o", "i.safetensors")
    run_refused(cli, workdir, args, 2, "GiB", "more than this machine's memory")
    for kwargs in ('{"widths": [8, -1]}', '{"widths": [8, 100000000000000000000000]}'):
        args = ("prune", "w.safetensors", "--arch", "mlp", "--arch-kwargs", kwargs, *prune)
        run_refused(cli, workdir, args, 2, "cannot build 'mlp'")


USER_MODULE = """
import sys
import torch

def raises():
    raise ValueError("no such width\\nsecond line")

def exits():
    sys.exit(0)

def number():
    return 42

def interrupted():
    raise KeyboardInterrupt

value = 5
"""


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        (":", ("neither a zoo name nor an import path",)),
        (".:x", ("neither a zoo name nor an import path",)),
        ("..foo:x", ("neither a zoo name nor an import path",)),
        ("pkg.:x", ("neither a zoo name nor an import path",)),
        ("a b:c", ("neither a zoo name nor an import path",)),
        ("{mod}:", ("neither a zoo name nor an import path",)),
        ("{mod}:raises", ("{mod}:raises", "ValueError: no such width")),
        ("{mod}:exits", ("{mod}:exits", "sys.exit(0)")),
        ("{mod}:number", ("returned int, not a torch.nn.Module",)),
        ("{mod}:value", ("is not callable",)),
        ("{mod}:missing", ("has no attribute 'missing'",)),
        ("{mod}_absent:build", ("cannot import", "No module named")),
        ("{mod}_broken:build", ("cannot import", "RuntimeError: broken at import")),
    ],
)
def test_arch_import_paths_and_factories(cli, workdir, monkeypatch, spec, fragments) -> None:
    """Bad import paths and the user's failing code exit 2 with one line, never 70."""
    name = f"user_arch_{os.getpid()}_{abs(hash(spec))}"
    (workdir / f"{name}.py").write_text(USER_MODULE)
    (workdir / f"{name}_broken.py").write_text('raise RuntimeError("broken at import")\n')
    monkeypatch.syspath_prepend(str(workdir))
    write_weights(workdir / "w.safetensors", {"fc1.weight": torch.randn(4, 4)})
    spec = spec.format(mod=name)
    args = ("prune", "w.safetensors", "--arch", spec, "-m", "magnitude", "-s", "0.5")
    try:
        run_refused(cli, workdir, args, 2, *(f.format(mod=name) for f in fragments))
    finally:
        for module in (name, f"{name}_broken"):
            sys.modules.pop(module, None)


def test_pt2_expressions_torch_prints_are_admitted_and_code_is_not() -> None:
    import sympy
    from torch._export.serde.serialize import _print_sympy
    from torch.utils._sympy.functions import CeilDiv, FloorDiv, Mod
    from torch.utils._sympy.numbers import int_oo

    from prunecli.io.pt2 import _safe_expression

    s = sympy.Symbol("s77", positive=True, integer=True)
    u = sympy.Symbol("u0", integer=True)
    printed = [2 * s, FloorDiv(s, 2), Mod(s, 3), CeilDiv(s, 4), sympy.Max(2, s), s > 2, s <= 3]
    printed += [sympy.Eq(s, 4), sympy.Ne(s, 4), sympy.Float(1.5) * s, sympy.Rational(1, 2) * s]
    printed += [int_oo, -int_oo, sympy.And(s > 2, u < 3), sympy.sqrt(s), sympy.true]
    for expression in printed:
        assert _safe_expression(_print_sympy(expression), guard=False), expression
    assert _safe_expression("L['x'].size()[0] <= 9223372036854775807", guard=True)
    for code in (
        "open(chr(1))", "s0.func", "(1).__class__", "Float('1e5', precision=open)", "eval('1')",
        "Symbol('__import__')", "lambda: 1", "[x for x in s0]", "Symbol('a b')", "5!",
    ):  # fmt: skip
        assert not _safe_expression(code, guard=False), code
    for code in ("__import__('os')", "L['x'].__class__", "L['x\"y']", "open('f') == 0"):
        assert not _safe_expression(code, guard=True), code


def test_transformers_log_lines_do_not_reach_the_user(workdir: Path) -> None:
    """transformers logs about odd configs ("bos_token_id must be ..."): one clean run."""
    folder = write_llama(workdir / "odd")
    config = json.loads((folder / "config.json").read_text())
    config.update(bos_token_id=999, eos_token_id=998)  # outside the 32-token vocabulary
    (folder / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "prunecli", "prune", "odd", "-m", "snip", "-s", "0.5",
         "--data", "digits", "-o", "out", "-q"],
        cwd=workdir, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
