"""`train` under torchrun: two CPU ranks (gloo) stay in step and keep the same masks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = """
import sys, torch
from safetensors.torch import save_file
from torch import nn
from prunecli.training import distributed
from prunecli.training.loop import train
from prunecli.training.settings import TrainSettings
from prunecli.data.labelled import from_arrays

g = torch.Generator().manual_seed(0)
x = torch.randn(120, 6, generator=g)
data = from_arrays(x, (x[:, 0] > 0).long())
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
masks = {"0.weight": torch.rand(16, 6, generator=g) > 0.5}
train(net, masks, data, TrainSettings(steps=10, batch_size=20, lr=0.05))
state = {k: v.contiguous() for k, v in net.state_dict().items()}
save_file(state, f"{sys.argv[1]}/rank{distributed.rank()}.safetensors")
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_ranks_hold_identical_weights_and_masks(tmp_path: Path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        str(script),
        str(tmp_path),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    for name in first:
        assert torch.equal(first[name], second[name]), name
    # each rank trained on half of every batch; DDP's averaged gradient is the full batch's, so
    # one process training on whole batches takes the same steps (up to rounding)
    namespace: dict = {}
    exec(SCRIPT.rsplit("state = ", 1)[0], namespace)  # the same training, in this process
    alone = namespace["net"].state_dict()
    keep = namespace["masks"]["0.weight"]
    for name in first:
        assert torch.allclose(first[name], alone[name], atol=1e-5), name
    assert bool((first["0.weight"][~keep] == 0).all())
    assert bool((first["0.weight"][keep] != 0).all())
