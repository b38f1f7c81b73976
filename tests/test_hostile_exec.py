"""Issue 12, code execution: no model file runs code, and no config builds a model the stored
tensors cannot fill. Each test builds its hostile input itself; the code-execution tests assert
that a marker file the payload would create does not appear."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_refused, run_refused

REPO = Path(__file__).resolve().parent.parent


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
