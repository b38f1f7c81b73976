"""What the progress bars of `eval` and a causal LM's `sweep` are told: windows measured, the run
and the block it is at."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_calibrated_llama, write_llama

from prunecli.evaluation.metrics import perplexity


def test_perplexity_reports_the_windows_done_after_each_batch(workdir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    model = transformers.LlamaForCausalLM.from_pretrained(write_llama(workdir / "llama"))
    windows = torch.randint(0, 32, (5, 8), generator=torch.Generator().manual_seed(0))
    calls: list[tuple[int, int]] = []
    entry = perplexity(model, windows, "ids", batch_size=2, progress=lambda *c: calls.append(c))
    assert calls == [(2, 5), (4, 5), (5, 5)] and entry["windows"] == 5


def test_a_language_model_sweep_names_each_run_and_what_it_is_at(workdir: Path) -> None:
    from prunecli.jobs.sweep import parse_methods
    from prunecli.jobs.sweep_lm import LMSweepRequest, run_lm_sweep

    write_calibrated_llama(workdir)
    (workdir / "corpus.txt").write_text((workdir / "corpus.txt").read_text()[:1500])
    criteria = parse_methods("magnitude,wanda")
    request = LMSweepRequest(
        "llama", tuple(criteria), (0.5,), (0,), "corpus.txt", samples=2, seq_len=16
    )
    calls: list[tuple] = []
    run_lm_sweep(request, criteria, lambda *c: calls.append(c))
    labels = [c[2]["label"] for c in calls if len(c) == 3]
    assert calls[0] == (0, 2) and calls[-1] == (2, 2)
    assert labels[0].startswith("dense: perplexity ")
    assert "magnitude 0.5 (seed 0)" in labels and "wanda 0.5 (seed 0)" in labels
    assert any(label.startswith("wanda 0.5 (seed 0): model.layers.0 ") for label in labels)
    assert any(label.startswith("magnitude 0.5 (seed 0): perplexity ") for label in labels)
