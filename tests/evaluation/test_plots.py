"""evaluation/plots.py: the pictures checked without matplotlib — PIL reads the PNG, the standard
library's XML parser reads the SVG (one line per method, one vertex per point, log-density x)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prunecli.errors import BadInput, Unsupported
from prunecli.evaluation import plots
from prunecli.evaluation.plots import check_plot_path, rounds_curve, sparsity_curve
from tests.conftest import SMALL_MLP, run_refused, write_zoo
from tests.evaluation.svg_lines import line_groups, markers, vertices

SERIES = {
    "magnitude": [(0.9, 0.7, 0.6, 0.75), (0.5, 0.9, 0.88, 0.92), (0.98, 0.3, 0.2, 0.4), (0.8, 0.85, 0.8, 0.9)],
    "random": [(0.5, 0.8, 0.8, 0.8), (0.8, 0.6, 0.6, 0.6), (0.9, 0.4, 0.4, 0.4)],
}  # fmt: skip
BLUE = (31, 119, 180)  # the first line's colour (matplotlib's default cycle, "tab:blue")


@pytest.fixture(scope="module")
def svg(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("svg") / "sweep.svg"
    sparsity_curve(SERIES, path, title="magnitude & random <sweep>")
    return path.read_bytes()


def test_svg_one_line_per_method_one_vertex_per_point(svg: bytes) -> None:
    groups = line_groups(svg)
    assert set(groups) == {"method-magnitude", "method-random"}
    for method, points in SERIES.items():
        line = groups[f"method-{method}"]
        assert len(vertices(line)) == len(markers(line)) == len(points)


def test_svg_x_is_log_density_decreasing_to_the_right(svg: bytes) -> None:
    line = line_groups(svg)["method-magnitude"]
    by_x = sorted(markers(line))  # left to right
    sparsities = sorted(s for s, *_ in SERIES["magnitude"])  # sparser further right
    # equal steps in log(density) are equal steps in pixels
    steps = [b[0] - a[0] for a, b in zip(by_x, by_x[1:], strict=False)]
    logs = [
        math.log(1 - a) - math.log(1 - b) for a, b in zip(sparsities, sparsities[1:], strict=False)
    ]
    assert np.allclose(np.array(steps) / steps[0], np.array(logs) / logs[0], rtol=1e-4)
    # y grows downward in SVG: the accuracies, read left to right, fall as the markers sink
    means = [m for _, m, *_ in sorted(SERIES["magnitude"])]
    assert np.argsort([-y for _, y in by_x]).tolist() == np.argsort(means).tolist()


def test_svg_spread_only_where_seeds_differ(svg: bytes) -> None:
    text = svg.decode()
    assert text.count('id="spread-magnitude"') == 1
    assert 'id="spread-random"' not in text  # low == high == mean: nothing to shade


def test_png_opens_with_pil_and_shows_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "sweep.png"
    sparsity_curve(SERIES, path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (640, 400)
        assert image.mode in ("RGB", "RGBA")
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert (pixels == BLUE).all(axis=1).sum() > 100  # the line is drawn in its colour


def test_pdf_and_the_same_bytes_twice(tmp_path: Path) -> None:
    sparsity_curve(SERIES, tmp_path / "a.pdf")
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")
    sparsity_curve(SERIES, tmp_path / "a.svg")
    sparsity_curve(SERIES, tmp_path / "b.svg")
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


def test_rounds_curve_leaves_out_rounds_without_accuracy() -> None:
    rounds = [
        {"sparsity": 0.0, "test_accuracy": 0.9},
        {"sparsity": 0.5, "test_accuracy": 0.85},
        {"sparsity": 0.75, "test_accuracy": None},
        {"sparsity": 0.875, "test_accuracy": 0.6},
    ]
    (line,) = line_groups(rounds_curve(rounds, "svg", "imp: rounds", "imp")).values()
    assert len(markers(line)) == 3
    assert rounds_curve(rounds, "png", "imp", "imp").startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("name", ["plot.jpg", "plot", "plot.svgz"])
def test_unknown_suffix_refused_before_any_work(tmp_path: Path, monkeypatch, name: str) -> None:
    def drawn(*_args, **_kwargs):
        raise AssertionError("drawn before the suffix was checked")

    monkeypatch.setattr(plots, "render_sparsity_curve", drawn)
    with pytest.raises(BadInput) as refused:
        sparsity_curve(SERIES, tmp_path / name)
    assert all(s in str(refused.value) for s in (".png", ".svg", ".pdf"))
    assert refused.value.exit_code == 2 and list(tmp_path.iterdir()) == []
    assert check_plot_path("x.SVG") == "svg"


def test_sparsity_outside_range_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="outside"):
        sparsity_curve({"magnitude": [(1.0, 0.1, 0.1, 0.1)]}, tmp_path / "p.png")
    assert list(tmp_path.iterdir()) == []


def test_missing_matplotlib_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    with pytest.raises(Unsupported) as refused:
        sparsity_curve(SERIES, tmp_path / "p.png")
    assert refused.value.exit_code == 3
    assert "pip install 'prunecli[plot]'" in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_imp_curve_report_without_matplotlib_refused_up_front(
    cli, workdir: Path, monkeypatch
) -> None:
    write_zoo(workdir / "init.safetensors", "mlp", SMALL_MLP)
    rng = np.random.default_rng(0)
    np.savez(
        workdir / "data.npz", x=rng.normal(size=(8, 12)).astype(np.float32), y=np.zeros(8, np.int64)
    )
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    args = ("prune", "init.safetensors", "-m", "imp", "--sparsity", "0.5", "--data", "data.npz",
            "--steps", "2", "-o", "imp.safetensors", "--report")  # fmt: skip
    for suffix in (".svg", ".png", ".pdf"):
        run_refused(cli, workdir, (*args, f"curve{suffix}"), 3, "prunecli[plot]")
    magnitude = ("prune", "init.safetensors", "-m", "magnitude", "--sparsity", "0.5")
    run_refused(cli, workdir, (*magnitude, "--report", "r.pdf"), 2, ".pdf report", ".svg")
    run_refused(cli, workdir, (*args, "curve.jpg"), 2, "unknown report format", ".png or .pdf")


def test_one_point_or_none_draws_without_warnings(recwarn) -> None:
    one = rounds_curve([{"sparsity": 0.9, "test_accuracy": 0.5}], "svg", "imp", "imp")
    assert [len(markers(g)) for g in line_groups(one).values()] == [1]
    none = rounds_curve([{"sparsity": 0.5, "test_accuracy": None}], "svg", "imp", "imp")
    assert line_groups(none) == {} and not recwarn.list
