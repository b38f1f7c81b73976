"""Streaming pruning (jobs/stream.py) against the in-memory path (jobs/prune.py).

The in-memory path selects with ``pruning/select.py``; the streaming path finds thresholds over bit
patterns read chunk by chunk. They are independent routes to the same masks: the files they
write must be identical, byte for byte, for every scope, both methods and each float dtype,
with ties and pre-existing zeros (including -0.0) in the weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from prunecli.criteria import get_criterion
from prunecli.io.checkpoint import open_checkpoint
from prunecli.jobs.prune import prune_to_file
from prunecli.jobs.session import open_model
from prunecli.jobs.settings import PruneSettings
from prunecli.jobs.stream import stream_prune_to_file
from prunecli.streaming import passes as stream_passes


def tensors(dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(40, 30, generator=generator)
    a[:4] = 0.0
    a[4, :5] = -0.0  # a zero too: pruned already, written back as +0.0
    ties = torch.randint(-3, 4, (24, 40), generator=generator) * 0.5  # few values: many ties
    return {
        "a.weight": a.to(dtype),
        "a.bias": torch.randn(40, generator=generator).to(dtype),
        "b.weight": ties.to(dtype),
        "norm.weight": torch.ones(24, dtype=dtype),
        "c.weight": torch.randn(6, 24, 3, 3, generator=generator).to(dtype),
        "steps": torch.arange(7),
        "flags": torch.tensor([True, False, True]),
    }


def prune_both(tmp_path: Path, method: str, scope: str, sparsity: float, fmt: str = "dense"):
    model, names = open_model(str(tmp_path / "in.safetensors"))
    settings = PruneSettings(sparsity, scope, None, "exponential", 3)
    for old in ("mem.st", "str.st"):  # the writers replace nothing the CLI's check did not allow
        (tmp_path / old).unlink(missing_ok=True)
    prune_to_file(
        model, names, get_criterion(method)(), settings, str(tmp_path / "mem.st"), None, fmt
    )
    checkpoint = open_checkpoint(str(tmp_path / "in.safetensors"))
    report = stream_prune_to_file(
        checkpoint, names, method, settings, str(tmp_path / "str.st"), fmt
    )
    return names, report


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 256 bytes: every tensor spans many, so ties cross chunk boundaries."""
    monkeypatch.setattr(stream_passes, "CHUNK_BYTES", 256)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["magnitude", "random"])
@pytest.mark.parametrize("scope", ["global", "layer", "erk"])
def test_streaming_writes_the_in_memory_bytes(
    tmp_path: Path, small_chunks: None, dtype: torch.dtype, method: str, scope: str
) -> None:
    save_file(tensors(dtype), str(tmp_path / "in.safetensors"))
    names, report = prune_both(tmp_path, method, scope, 0.6)
    assert (tmp_path / "str.st").read_bytes() == (tmp_path / "mem.st").read_bytes()
    pruned = load_file(str(tmp_path / "str.st"))  # the safetensors library reads it
    total = sum(pruned[name].numel() for name in names)
    zeros = sum(int((pruned[name] == 0).sum()) for name in names)
    if scope == "global":
        assert zeros == round(0.6 * total)
    assert report.sparsity == pytest.approx(zeros / total)
    original = tensors(dtype)
    for name in names:  # never revived: a zero stays zero; kept weights are unchanged
        assert not bool(((original[name] == 0) & (pruned[name] != 0)).any())
        kept = pruned[name] != 0
        assert torch.equal(pruned[name][kept], original[name][kept])
    for name in ("a.bias", "steps", "flags"):
        assert torch.equal(pruned[name], original[name])


@pytest.mark.parametrize("sparsity", [0.0, 0.05, 0.999])
def test_edges_of_the_count_match(tmp_path: Path, small_chunks: None, sparsity: float) -> None:
    """Nothing to prune (zeros already beyond the target), and almost everything."""
    save_file(tensors(torch.float32), str(tmp_path / "in.safetensors"))
    _, report = prune_both(tmp_path, "magnitude", "global", sparsity)
    assert (tmp_path / "str.st").read_bytes() == (tmp_path / "mem.st").read_bytes()
    if sparsity == 0.05:  # 4 rows of zeros are more than 5%: a warning, as in memory
        assert report.warnings and "already had" in report.warnings[0]


def test_mixed_dtypes_and_float64_compare_as_in_memory(tmp_path: Path, small_chunks: None) -> None:
    parts = {
        "a.weight": tensors(torch.float16)["a.weight"],
        "b.weight": tensors(torch.bfloat16)["b.weight"],
        "c.weight": tensors(torch.float64)["c.weight"],
    }
    save_file(parts, str(tmp_path / "in.safetensors"))
    prune_both(tmp_path, "magnitude", "global", 0.5)
    assert (tmp_path / "str.st").read_bytes() == (tmp_path / "mem.st").read_bytes()
    parts.pop("c.weight")
    save_file(parts, str(tmp_path / "in.safetensors"))
    prune_both(tmp_path, "magnitude", "global", 0.5)
    assert (tmp_path / "str.st").read_bytes() == (tmp_path / "mem.st").read_bytes()


def test_a_misleading_sample_still_gives_the_exact_masks(
    tmp_path: Path, small_chunks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def wrong_band(pool, sample, max_key) -> None:  # noqa: ANN001 - the band of the top keys
        pool.lo, pool.hi = max_key - 1, max_key

    monkeypatch.setattr(stream_passes, "sample_band", wrong_band)
    save_file(tensors(torch.float32), str(tmp_path / "in.safetensors"))
    prune_both(tmp_path, "magnitude", "global", 0.5)
    assert (tmp_path / "str.st").read_bytes() == (tmp_path / "mem.st").read_bytes()


def test_bitmask_output_matches_in_memory(tmp_path: Path, small_chunks: None) -> None:
    save_file(tensors(torch.bfloat16), str(tmp_path / "in.safetensors"))
    prune_both(tmp_path, "magnitude", "global", 0.8, "bitmask")
    assert (tmp_path / "str.st").read_bytes() == (tmp_path / "mem.st").read_bytes()


def test_fp8_weights_prune_by_magnitude_and_keep_their_dtype(tmp_path: Path) -> None:
    """fp8: the in-memory path has no |x| kernel for it; check against a hand computation."""
    values = torch.linspace(-2, 2, 512).reshape(16, 32)
    save_file(
        {"f.weight": values.to(torch.float8_e4m3fn), "g.weight": values.to(torch.float8_e5m2)},
        str(tmp_path / "in.safetensors"),
    )
    checkpoint = open_checkpoint(str(tmp_path / "in.safetensors"))
    settings = PruneSettings(0.5, "layer")
    stream_prune_to_file(
        checkpoint, ["f.weight", "g.weight"], "magnitude", settings, str(tmp_path / "o.st")
    )
    pruned = load_file(str(tmp_path / "o.st"))
    for name, dtype in (("f.weight", torch.float8_e4m3fn), ("g.weight", torch.float8_e5m2)):
        assert pruned[name].dtype == dtype
        weight = pruned[name].float()
        original = values.to(dtype).float()
        assert int((weight == 0).sum()) == 256
        assert float(original.abs()[weight == 0].max()) <= float(original.abs()[weight != 0].min())
        assert torch.equal(weight[weight != 0], original[weight != 0])
    assert math.prod(pruned["f.weight"].shape) == 512
