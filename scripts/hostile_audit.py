"""Run issue 12's listed hostile and clumsy inputs as a user would, one subprocess each, and
print a Markdown table: exit code against the expected one, stderr lines, whether every input is
byte-identical afterwards and whether a stray file appeared.

    PYTHONPATH=$PWD python3 scripts/hostile_audit.py /tmp/hostile-audit

The regression tests are tests/hostile/test_hostile_*.py; this is the same ground walked end to end, for
a closing note or a quick look after a change (about two minutes). The folder must not exist.
"""

import hashlib
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from prunecli.models.zoo import build_arch

W = Path(sys.argv[1])
W.mkdir(parents=True)
os.chdir(W)
rows = []
MAGNITUDE = ["prune", "m.safetensors", "-m", "magnitude", "-s", "0.5"]
SYNFLOW = ["prune", "m.safetensors", "-m", "synflow", "-s", "0.5"]


def snap(root=W):
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "link:" + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()[:12]
        else:
            out[str(p)] = "dir"
    return out


def run(label, args, want, stdin=None, expect_new=(), **kw):
    before = snap()
    p = subprocess.run(
        [sys.executable, "-m", "prunecli", *args],
        input=stdin,
        capture_output=True,
        timeout=600,
        **kw,
    )
    after = snap()
    err = p.stderr.decode(errors="replace").strip().splitlines()
    changed = [k for k in before if after.get(k) != before[k]]
    new = [
        k
        for k in after
        if k not in before and not any(k.startswith(str(W / e)) for e in expect_new)
    ]
    ok = (
        p.returncode == want
        and len(err) <= 2
        and "Traceback" not in p.stderr.decode(errors="replace")
        and not changed
        and not new
    )
    rows.append(
        (
            label,
            p.returncode,
            want,
            len(err),
            "unchanged" if not changed else f"CHANGED {changed[:2]}",
            "none" if not new else f"STRAY {new[:2]}",
            "ok" if ok else "FAIL",
            err[0][:110] if err else "",
        )
    )


def shell(label, command, want):
    """A case whose stream plumbing needs the shell (a full or closed stdout, a pipe in)."""
    p = subprocess.run(
        command.replace("prunecli", f"{sys.executable} -m prunecli", 1),
        shell=True,
        stderr=subprocess.PIPE,
        timeout=600,
    )
    err = p.stderr.decode(errors="replace").strip().splitlines()
    verdict = "ok" if p.returncode == want and len(err) <= 2 else "FAIL"
    rows.append(
        (label, p.returncode, want, len(err), "-", "-", verdict, err[0][:110] if err else "")
    )


# a model
torch.manual_seed(0)
m = build_arch("mlp", {"widths": [16, 32, 26]}).module
meta = {
    "format": "pt",
    "prunecli.arch": "mlp",
    "prunecli.arch_kwargs": json.dumps({"widths": [16, 32, 26]}),
}
save_file({k: v.contiguous() for k, v in m.state_dict().items()}, "m.safetensors", metadata=meta)


# 1. pt2 with use_pickle weight
class Touch:
    def __reduce__(self):
        return (open, (str(W / "PWNED"), "w"))


class Net(torch.nn.Module):
    def __init__(s):
        super().__init__()
        s.fc = torch.nn.Linear(6, 4)

    def forward(s, x):
        return s.fc(x)


torch.export.save(torch.export.export(Net(), (torch.randn(2, 6),)), "good.pt2")
with zipfile.ZipFile("good.pt2") as old, zipfile.ZipFile("evil.pt2", "w") as new:
    for info in old.infolist():
        data = old.read(info)
        if info.filename.endswith("model_weights_config.json"):
            cfg = json.loads(data)
            [v.update(use_pickle=True) for v in cfg["config"].values()]
            data = json.dumps(cfg).encode()
        if info.filename.endswith("data/weights/weight_0"):
            data = pickle.dumps(Touch())
        new.writestr(info, data)
for cmd in (
    ["inspect", "evil.pt2"],
    ["prune", "evil.pt2", "-m", "magnitude", "-s", "0.5", "-o", "o.pt2"],
    ["export", "evil.pt2", "--to", "onnx", "-o", "o.onnx"],
):
    run(f"1 pt2 use_pickle: {cmd[0]}", cmd, 2)
assert not (W / "PWNED").exists(), "PWNED"
# 2. auto_map
hf = W / "remote"
hf.mkdir()
(hf / "config.json").write_text(
    json.dumps(
        {
            "model_type": "llama",
            "auto_map": {"AutoConfig": "evil.Cfg", "AutoModel": "evil.Model"},
            "architectures": ["Model"],
        }
    )
)
(hf / "evil.py").write_text(f"open({str(W / 'PWNED2')!r}, 'w')\n")
save_file({"model.layers.0.mlp.up_proj.weight": torch.randn(8, 8)}, str(hf / "model.safetensors"))
run(
    "2 auto_map: prune snip (answers y)",
    ["prune", "remote", "-m", "snip", "-s", "0.5", "--data", "digits", "-o", "r.out"],
    3,
    stdin=b"y\n",
)
run(
    "2 auto_map: prune magnitude works",
    ["prune", "remote", "-m", "magnitude", "-s", "0.5", "-o", "r.out"],
    0,
    expect_new=("r.out",),
)
assert not (W / "PWNED2").exists(), "PWNED2"
# 3. minimal config
mini = W / "mini"
mini.mkdir()
(mini / "config.json").write_text('{"model_type":"llama"}')
save_file({"model.embed_tokens.weight": torch.randn(8, 8)}, str(mini / "model.safetensors"))
run(
    "3 minimal llama config, snip",
    ["prune", "mini", "-m", "snip", "-s", "0.5", "--data", "digits", "-o", "mini.out"],
    2,
)
# 4. -o DIR ancestor
d = W / "D"
(d / "in").mkdir(parents=True)
(d / "keep.txt").write_text("mine")
save_file({"fc.weight": torch.randn(8, 8)}, str(d / "in" / "model.safetensors"))
(d / "in" / "config.json").write_text("{}")
run(
    "4 prune D/in -o D --force",
    ["prune", "D/in", "-m", "magnitude", "-s", "0.5", "-o", "D", "--force"],
    2,
)
run(
    "4 prune D/in -o D/in/sub",
    ["prune", "D/in", "-m", "magnitude", "-s", "0.5", "-o", "D/in/sub"],
    2,
)
# 5. report onto inputs
run(
    "5 inspect D/in --report D/in/config.json",
    ["inspect", "D/in", "--report", "D/in/config.json"],
    2,
)
run(
    "5 prune --report D/in/config.json --force",
    [
        "prune",
        "D/in",
        "-m",
        "magnitude",
        "-s",
        "0.5",
        "-o",
        "D2",
        "--report",
        "D/in/config.json",
        "--force",
    ],
    2,
)
Path("r.json").write_text("old")
run(
    "5 inspect --report existing (no --force)",
    ["inspect", "m.safetensors", "--report", "r.json"],
    2,
)
# 6. --data as output
np.savez("d.npz", x=np.random.rand(40, 16).astype("float32"), y=np.arange(40) % 26)
save_file({"x": torch.rand(40, 16), "y": torch.arange(40) % 26}, "d.safetensors")
for cmd in ("prune", "score"):
    extra = ["-s", "0.5"] if cmd == "prune" else []
    run(
        f"6 {cmd} --data d.safetensors -o d.safetensors --force",
        [
            cmd,
            "m.safetensors",
            "-m",
            "snip",
            *extra,
            "--data",
            "d.safetensors",
            "-o",
            "d.safetensors",
            "--force",
        ],
        2,
    )
run(
    "6 retrain --data d.safetensors -o d.safetensors --force",
    [
        "retrain",
        "m.safetensors",
        "--data",
        "d.safetensors",
        "--epochs",
        "1",
        "-o",
        "d.safetensors",
        "--force",
    ],
    2,
)
# 9. -o . / prune . / prune ..
run(
    "9 -o . --force (in D/in)",
    ["prune", ".", "-m", "magnitude", "-s", "0.5", "-o", ".", "--force"],
    2,
    cwd=d / "in",
)
run(
    "9 prune . (in D/in) -> D/in.pruned",
    ["prune", ".", "-m", "magnitude", "-s", "0.5"],
    0,
    cwd=d / "in",
    expect_new=("D/in.pruned",),
)
sub = d / "in" / "sub"
sub.mkdir()
run(
    "9 prune .. (in D/in/sub) -> D/in.pruned",
    ["prune", "..", "-m", "magnitude", "-s", "0.5", "--force"],
    0,
    cwd=sub,
    expect_new=("D/in.pruned",),
)
# 10. deep JSON, long ints
run(
    "10 --arch-kwargs deeply nested",
    [
        *MAGNITUDE,
        "--arch",
        "mlp",
        "--arch-kwargs",
        "[" * 20000 + "]" * 20000,
        "-o",
        "x.safetensors",
    ],
    2,
)
run(
    "10 --arch-kwargs 5000-digit int",
    [
        *MAGNITUDE,
        "--arch",
        "mlp",
        "--arch-kwargs",
        '{"widths":[' + "9" * 5000 + "]}",
        "-o",
        "x.safetensors",
    ],
    2,
)
hdr = b"[" * 50000 + b"]" * 50000
Path("deep.safetensors").write_bytes(len(hdr).to_bytes(8, "little") + hdr)
run("10 safetensors header nested 50000 deep", ["inspect", "deep.safetensors"], 2)
# 11
run(
    "11 --arch-kwargs widths [1e9,1e9]",
    [
        *SYNFLOW,
        "--arch",
        "mlp",
        "--arch-kwargs",
        '{"widths":[1000000000,1000000000]}',
        "-o",
        "x.safetensors",
    ],
    2,
)
run(
    "11 --input-shape 16,16",
    [
        *SYNFLOW,
        "--input-shape",
        "16,16",
        "-o",
        "x.safetensors",
    ],
    2,
)
for a in (":", ".:x", "..foo:x"):
    run(
        f"11 --arch {a!r}",
        [
            *SYNFLOW,
            "--arch",
            a,
            "-o",
            "x.safetensors",
        ],
        2,
    )
Path("fac.py").write_text("def f(**k):\n    raise ValueError('boom')\n")
run(
    "11 --arch factory that raises",
    [
        *SYNFLOW,
        "--arch",
        "fac:f",
        "-o",
        "x.safetensors",
    ],
    2,
    env={**os.environ, "PYTHONPATH": os.environ["PYTHONPATH"] + ":" + str(W)},
)
run(
    "11 -o 300-char name",
    [*MAGNITUDE, "-o", "a" * 300 + ".safetensors"],
    2,
)
PRUNE_TO_STDOUT = "prunecli prune m.safetensors -m magnitude -s 0.5 -o -"
shell("11 -o - > /dev/full", f"{PRUNE_TO_STDOUT} > /dev/full", 2)
shell("11 -o - >&- (closed stdout)", f"{PRUNE_TO_STDOUT} >&-", 2)
# 12
save_file(
    {"fc[/].weight": torch.randn(8, 8)}, "mk.safetensors", metadata={"note": "x\nprunecli: ok"}
)
(W / "o[").mkdir()
run(
    "12 markup name, -o 'o[/].safetensors'",
    ["prune", "mk.safetensors", "-m", "magnitude", "-s", "0.5", "-o", "o[/].safetensors"],
    0,
    expect_new=("o[/].safetensors",),
)
# 13 bitmask folder
(W / "F").mkdir()
save_file({"fc.weight": torch.randn(8, 8)}, str(W / "F" / "model.safetensors"))
subprocess.run(
    [
        sys.executable,
        "-m",
        "prunecli",
        "prune",
        "F",
        "-m",
        "magnitude",
        "-s",
        "0.5",
        "--format",
        "bitmask",
        "-o",
        "B",
        "-q",
    ],
    check=True,
)
run(
    "13 prune a bitmask folder again",
    ["prune", "B", "-m", "magnitude", "-s", "0.7", "-o", "B2"],
    0,
    expect_new=("B2",),
)
run(
    "13 export a bitmask folder",
    ["export", "B", "--to", "safetensors", "-o", "B.safetensors"],
    0,
    expect_new=("B.safetensors",),
)
# 15 stdin
shell("15 yes | prunecli inspect -", "yes | timeout 60 prunecli inspect -", 2)
# gate rounding
save_file({"fc.weight": torch.randn(32, 26)}, "g.safetensors")  # 832 weights
subprocess.run(
    [
        sys.executable,
        "-m",
        "prunecli",
        "prune",
        "g.safetensors",
        "-m",
        "magnitude",
        "-s",
        "0.95",
        "-o",
        "g95.safetensors",
        "-q",
    ],
    check=True,
)
run(
    "gate: prune -s 0.95 then --min-sparsity 0.95 (832 w)",
    ["inspect", "g95.safetensors", "--min-sparsity", "0.95", "-q"],
    0,
)
run(
    "bounds: --epochs 10**20",
    ["retrain", "m.safetensors", "--data", "d.npz", "--epochs", str(10**20), "-o", "t.safetensors"],
    2,
)

print(
    "| case | exit | expected | stderr lines | inputs | stray files | verdict | first stderr line |"
)
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
print("marker files created:", [p.name for p in W.glob("PWNED*")])
