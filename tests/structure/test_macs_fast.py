"""The fast route of the MAC count (structure/cost_formulas.py: formulas under a
TorchFunctionMode, on a real forward pass) against the meta route (FlopCounterMode) and by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import write_zoo
from torch import nn

from prunecli.models.zoo import build_arch, list_archs
from prunecli.structure.cost import REAL_RUN_MAX_MACS, count_macs, count_on_meta
from prunecli.structure.cost_formulas import Unseen, count_by_formula


def both_routes(module: nn.Module, example: torch.Tensor) -> int:
    """The count by formula, checked equal to FlopCounterMode's on the meta device."""
    fast = count_by_formula(module, example, REAL_RUN_MAX_MACS)
    assert fast == count_on_meta(module, example)
    return fast


@pytest.mark.parametrize("arch", [entry.name for entry in list_archs()])
def test_every_zoo_architecture_counts_the_same_on_both_routes(arch: str) -> None:
    built = build_arch(arch)
    assert both_routes(built.module, torch.zeros(1, *built.input_shape)) > 0


CONVOLUTIONS = [
    (nn.Conv1d(4, 6, 5, stride=2, padding=3, dilation=2), (4, 17)),
    (nn.Conv2d(8, 12, 3, stride=(2, 1), padding=(2, 0), dilation=2, groups=4), (8, 11, 9)),
    (nn.Conv2d(4, 4, 3, padding="same", groups=4, padding_mode="reflect"), (4, 7, 7)),
    (nn.Conv2d(3, 5, (3, 2), padding="valid", bias=False), (3, 8, 6)),
    (nn.Conv3d(2, 4, 3, stride=2, padding=1), (2, 5, 6, 7)),
    (nn.ConvTranspose1d(4, 6, 3, stride=2, output_padding=1, groups=2), (4, 9)),
    (nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, dilation=2, groups=2), (6, 5, 4)),
    (nn.ConvTranspose3d(2, 3, 2, stride=2), (2, 3, 3, 3)),
]


@pytest.mark.parametrize(("conv", "shape"), CONVOLUTIONS, ids=lambda v: type(v).__name__)
def test_convolutions_of_every_kind(conv: nn.Module, shape: tuple[int, ...]) -> None:
    assert both_routes(conv, torch.zeros(1, *shape)) > 0


def test_a_grouped_convolution_and_an_unbatched_input_by_hand() -> None:
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=2, dilation=2, groups=4)
    # output 6×6 per side ((11 + 4 - 4 - 1) // 2 + 1); each value: 8/4 · 3 · 3 MACs
    assert both_routes(conv, torch.zeros(1, 8, 11, 11)) == 12 * 6 * 6 * 2 * 9
    transposed = nn.ConvTranspose1d(4, 6, 3, groups=2)  # each input value: 6/2 · 3 MACs
    assert count_by_formula(transposed, torch.zeros(4, 10), REAL_RUN_MAX_MACS) == 40 * 3 * 3


class Products(nn.Module):
    """Every product the fast route has a formula for, with the shapes models give them."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 12)
        self.w = nn.Parameter(torch.zeros(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [1, 6, 8]
        h = self.proj(x)  # 6·8·12
        h = h + F.linear(x[0, 0], self.proj.weight).sum()  # an unbatched vector: 8·12
        b = x @ self.w  # 6·8·5
        q = h.view(1, 6, 3, 4).transpose(1, 2)  # [1, 3, 6, 4]
        scores = torch.matmul(q, q.transpose(-1, -2).expand(2, 3, 4, 6))  # broadcast: 2·3·6·4·6
        flat = x[0]
        m = torch.mm(flat, self.w) + flat.mm(self.w)  # 2 · 6·8·5
        m = torch.addmm(m, flat, self.w) + m.addmm(flat, self.w)  # 2 · 6·8·5
        bb = torch.bmm(q[0], q[0].transpose(1, 2))  # 3·6·4·6
        bb = torch.baddbmm(bb, q[0], q[0].transpose(1, 2))  # 3·6·4·6
        return b.sum() + scores.sum() + m.sum() + bb.sum()


def test_products_of_every_kind() -> None:
    expected = (
        6 * 8 * 12 + 8 * 12 + 6 * 8 * 5 + 2 * 3 * 6 * 4 * 6 + 4 * 6 * 8 * 5 + 2 * 3 * 6 * 4 * 6
    )
    assert both_routes(Products(), torch.zeros(1, 6, 8)) == expected


class Attention(nn.Module):
    def __init__(self, heads: int, kv_heads: int, causal: bool, masked: bool) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.causal, self.masked = heads, kv_heads, causal, masked
        self.q, self.kv = nn.Linear(16, 16), nn.Linear(16, 2 * 16 // heads * kv_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [1, n, 16]
        n, head = x.shape[1], 16 // self.heads
        q = self.q(x).view(1, n, self.heads, head).transpose(1, 2)
        k, v = self.kv(x).view(1, n, 2, self.kv_heads, head).permute(2, 0, 3, 1, 4)
        mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril() if self.masked else None
        grouped = self.heads != self.kv_heads
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=self.causal, enable_gqa=grouped
        )


@pytest.mark.parametrize(
    ("heads", "kv_heads", "causal", "masked"),
    [(4, 4, False, False), (4, 4, True, False), (2, 2, False, True), (4, 2, False, False)],
    ids=["plain", "causal", "masked", "grouped"],
)
def test_attention(heads: int, kv_heads: int, causal: bool, masked: bool) -> None:
    n = 5  # projections, then Q·Kᵀ and A·V for every query head (16 = heads · head)
    expected = n * 16 * 16 + n * 16 * 2 * 16 // heads * kv_heads + 2 * n * n * 16
    assert (
        both_routes(Attention(heads, kv_heads, causal, masked), torch.zeros(1, n, 16)) == expected
    )


class Einsum(nn.Module):
    def __init__(self, catch: bool = False) -> None:
        super().__init__()
        self.w, self.catch = nn.Parameter(torch.zeros(8, 4)), catch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.catch:  # a forward that swallows the stop does not make the count whole
            try:
                return torch.einsum("bi,io->bo", x, self.w)
            except Exception:  # noqa: BLE001
                return x @ self.w
        return torch.einsum("bi,io->bo", x, self.w)


class MatVec(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(3, 8, device=x.device) @ x[0]  # mv: not counted by FlopCounterMode


class InPlace(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(1, 4, device=x.device).addmm_(x, torch.ones(8, 4, device=x.device))


@pytest.mark.parametrize(
    ("module", "example", "why", "macs"),
    [
        (nn.LSTM(8, 4, batch_first=True), torch.zeros(1, 3, 8), "LSTM", None),
        (Einsum(), torch.zeros(1, 8), "einsum", 8 * 4),
        (Einsum(catch=True), torch.zeros(1, 8), "einsum", 8 * 4),
        (MatVec(), torch.zeros(1, 8), "matrix-vector", 0),
        # FlopCounterMode counts no in-place addmm_: left to it, the two routes agree
        (InPlace(), torch.zeros(1, 8), "addmm_", 0),
        (torch.jit.trace(nn.Linear(8, 4), torch.zeros(1, 8)), torch.zeros(1, 8), "Traced", 32),
    ],
    ids=["lstm", "einsum", "einsum-caught", "matrix-vector", "in-place", "torchscript"],
)
def test_what_it_cannot_see_falls_back_to_the_meta_route(
    module: nn.Module, example: torch.Tensor, why: str, macs: int | None
) -> None:
    with pytest.raises(Unseen, match=why):
        count_by_formula(module, example, REAL_RUN_MAX_MACS)
    counted = count_macs(module, example)
    assert counted > 0 if macs is None else counted == macs


def test_past_its_budget_it_stops() -> None:
    mlp = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 4))
    assert count_by_formula(mlp, torch.zeros(1, 10), 280) == 280
    with pytest.raises(Unseen, match="more than 279 MACs"):
        count_by_formula(mlp, torch.zeros(1, 10), 279)


def test_the_module_is_left_as_it_was() -> None:
    class Counts(nn.Module):  # a forward that writes its buffers, in place and not
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3)
            self.register_buffer("calls", torch.zeros(()))
            self.register_buffer("last", torch.zeros(1, 3, 4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            self.last = self.bn(self.conv(x))
            return self.last

    module = Counts().train()
    last = module.last
    assert count_by_formula(module, torch.zeros(1, 2, 4, 4, device="meta"), 10**6) == 3 * 16 * 2
    assert module.training and module.bn.training
    assert int(module.calls) == 0 and module.last is last
    assert int(module.bn.num_batches_tracked) == 0 and module.bn.running_mean.abs().sum() == 0


def test_a_module_on_meta_is_left_to_the_meta_route() -> None:
    with torch.device("meta"):
        linear = nn.Linear(8, 4)
    with pytest.raises(Unseen, match="meta"):
        count_by_formula(linear, torch.zeros(1, 8), REAL_RUN_MAX_MACS)
    assert count_macs(linear, torch.zeros(1, 8)) == 32


PROBE = """
import runpy, sys
sys.argv = ["prunecli", "inspect", sys.argv[1], "--json"]
try:
    runpy.run_module("prunecli", run_name="__main__")
finally:
    print("torch._dynamo" in sys.modules, file=sys.stderr)
"""


def test_inspect_of_a_zoo_file_does_not_import_torch_dynamo(workdir: Path) -> None:
    path = write_zoo(workdir / "lenet5.safetensors", "lenet5")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # conv1 6·28·28·25, conv2 16·10·10·150, then 400·120 + 120·84 + 84·10
    macs = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    assert json.loads(done.stdout)["cost"]["macs"] == macs
    assert done.stderr.strip().splitlines()[-1] == "False"  # torch._dynamo was not imported
