"""Pictures of pruning results with matplotlib: a metric against sparsity, per method or round.

The x axis is the density (1 − sparsity) on a log scale, decreasing to the right, as
lottery-ticket papers draw it, so 80 %, 92 %, 96 % and 98 % sparsity spread out; its ticks are
labelled with the sparsity. matplotlib is an optional extra (``prunecli[plot]``), imported here
only, with the Agg canvas on a ``Figure`` of its own (pyplot's global state is never touched).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prunecli.errors import BadInput, Unsupported

PLOT_SUFFIXES = (".png", ".svg", ".pdf")
INSTALL_HINT = "install the plot extra: pip install 'prunecli[plot]'"
TICKS = 8  # at most this many sparsities are written under the axis

#: ``{method: [(sparsity, mean, low, high), ...]}``: one line per method through the means, with
#: a band from ``low`` to ``high`` (per-seed min/max, or mean ± std; equal to the mean for one
#: seed). Points may come in any order; sparsities lie in [0, 1).
Series = Mapping[str, Sequence[tuple[float, float, float, float]]]


def check_plot_path(path: str | Path, option: str = "--plot") -> str:
    """The format (``png``, ``svg`` or ``pdf``) of ``path``'s suffix, or BadInput naming them;
    a command calls it before any work."""
    suffix = Path(path).suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise BadInput(
            f"{option} {path}: a plot is drawn as .png, .svg or .pdf, not {suffix or 'no suffix'}",
            "name the file with one of .png, .svg, .pdf",
        )
    return suffix[1:]


def require_matplotlib() -> None:
    """Unsupported (exit 3) with the install hint when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise Unsupported("plots need matplotlib, which is not installed", INSTALL_HINT) from None


def sparsity_curve(
    series: Series,
    path: str | Path,
    metric: str = "test accuracy",
    title: str | None = None,
    percent: bool | None = None,
    dense: float | None = None,
) -> None:
    """Draw ``metric`` against sparsity, one line per method with its spread, and write it to
    ``path`` (format by suffix, written atomically). ``percent``: the metric is a fraction
    shown as a percentage (default: when ``metric`` names an accuracy); ``dense``: the unpruned
    model's figure, a dashed horizontal line."""
    from prunecli.io.atomic import atomic_output

    fmt = check_plot_path(path)
    for method, points in series.items():
        for point in points:
            _check_sparsity(point[0], method)
    data = render_sparsity_curve(
        series, fmt, metric, title or f"{metric} against sparsity", percent, dense=dense
    )
    with atomic_output(str(path)) as stream:
        stream.write(data)


def render_sparsity_curve(
    series: Series,
    fmt: str,
    metric: str = "test accuracy",
    title: str = "test accuracy against sparsity",
    percent: bool | None = None,
    annotate: bool = False,
    dense: float | None = None,
) -> bytes:
    """The bytes of :func:`sparsity_curve`'s picture in ``fmt``; ``annotate`` writes each
    point's value beside it; ``dense`` draws the unpruned model's figure as a dashed line."""
    require_matplotlib()
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator, PercentFormatter

    percent = "accuracy" in metric.lower() if percent is None else percent
    # every point stays a vertex of its line; SVG ids repeat per run; a "$" in a name is a "$"
    with rc_context({"path.simplify": False, "svg.hashsalt": "prunecli", "text.parse_math": False}):
        figure = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        densities: set[float] = set()
        for method, points in series.items():
            rows = sorted((1 - s, mean, low, high) for s, mean, low, high in points)
            if not rows:
                continue
            xs, means, lows, highs = (list(column) for column in zip(*rows, strict=True))
            densities.update(xs)
            (line,) = axes.plot(xs, means, marker="o", markersize=4, label=method)
            line.set_gid(f"method-{method}")
            if lows != means or highs != means:
                band = axes.fill_between(xs, lows, highs, alpha=0.2, color=line.get_color())
                band.set_gid(f"spread-{method}")
            if annotate:
                for x, y in zip(xs, means, strict=True):
                    text = f"{y:.1%}" if percent else f"{y:.4g}"
                    axes.annotate(text, (x, y), textcoords="offset points", xytext=(0, 6),
                                  ha="center", fontsize=8)  # fmt: skip
        if dense is not None and math.isfinite(dense):
            line = axes.axhline(dense, color="0.4", linestyle="--", linewidth=1, label="dense")
            line.set_gid("dense")
        if densities:
            low, high = min(densities), max(densities)
            if low == high:
                low, high = low / 1.5, min(high * 1.5, 1.0) if high < 1 else 1.2
            axes.set_xlim(high * 1.05, low / 1.05)  # decreasing to the right
        else:
            axes.set_xlim(1.0, 0.01)  # 0 % to 99 % sparsity, empty
            axes.text(0.5, 0.5, "no points to draw", ha="center", transform=axes.transAxes)
        axes.set_xscale("log")
        if densities:
            axes.xaxis.set_major_locator(FixedLocator(_ticks(sorted(densities))))
        axes.xaxis.set_minor_locator(NullLocator())
        axes.xaxis.set_major_formatter(FuncFormatter(lambda d, _: _sparsity_label(1 - d)))
        if percent:
            axes.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        axes.set_xlabel("sparsity (log scale of density = 1 − sparsity)")
        axes.set_ylabel(metric)
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
        axes.margins(y=0.12)  # room for the annotations
        if sum(1 for points in series.values() if points) > 1 or dense is not None:
            axes.legend(title="method")
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, metadata=_metadata(fmt))
    return buffer.getvalue()


def rounds_curve(
    rounds: Sequence[Mapping[str, Any]], fmt: str, title: str, method: str = "imp"
) -> bytes:
    """The test accuracy of a training method's rounds (``[{"sparsity", "test_accuracy"}, ...]``,
    the report's ``pruning.rounds``) against their sparsity, each point labelled; rounds without
    a test accuracy are left out."""
    points = [
        (r["sparsity"], r["test_accuracy"], r["test_accuracy"], r["test_accuracy"])
        for r in rounds
        if r.get("test_accuracy") is not None
    ]
    for point in points:
        _check_sparsity(point[0], method)
    return render_sparsity_curve({method: points}, fmt, title=title, annotate=True)


def _check_sparsity(sparsity: float, method: str) -> None:
    if not (0 <= sparsity < 1) or math.isnan(sparsity):
        raise BadInput(f"{method}: sparsity {sparsity} is outside [0, 1); nothing to plot")


def _ticks(densities: list[float]) -> list[float]:
    """At most TICKS of ``densities`` (ascending), spread evenly in log space, always the
    highest sparsity: the others are kept when far enough from the last one kept."""
    logs = [math.log10(d) for d in densities]
    gap = (logs[-1] - logs[0]) / TICKS
    chosen: list[float] = []
    for density, value in zip(densities, logs, strict=True):
        if not chosen or value - math.log10(chosen[-1]) >= gap:
            chosen.append(density)
    return chosen


def _sparsity_label(sparsity: float) -> str:
    return f"{100 * sparsity:.4g}%" if sparsity > 1e-9 else "0%"


def _metadata(fmt: str) -> dict[str, Any]:
    """No creation date, so the same figures give the same file."""
    return {"png": {}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
