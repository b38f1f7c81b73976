"""Accuracy against sparsity for the rounds of a training method: an SVG or a PNG picture.

The x axis is log-scaled in the density (1 − sparsity), as lottery-ticket plots are, so 0.8,
0.92, 0.96 and 0.98 spread out; each round is a labelled point.
"""

from __future__ import annotations

import math
from typing import Any

from prunecli.errors import Unsupported

WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 30, 40, 60


def _points(rounds: list[dict[str, Any]]) -> list[tuple[float, float, dict[str, Any]]]:
    rows = [r for r in rounds if r.get("test_accuracy") is not None]
    if not rows:
        return []
    xs = [-math.log10(max(1 - r["sparsity"], 1e-12)) for r in rows]
    ys = [r["test_accuracy"] for r in rows]
    x_low, x_high = min(xs), max(max(xs), min(xs) + 1e-9)
    y_low, y_high = math.floor(min(ys) * 10) / 10, min(math.ceil(max(ys) * 10) / 10, 1.0)
    y_high = max(y_high, y_low + 0.1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    return [
        (
            LEFT + (x - x_low) / (x_high - x_low) * plot_w,
            TOP + (1 - (y - y_low) / (y_high - y_low)) * plot_h,
            {**row, "_ylow": y_low, "_yhigh": y_high},
        )
        for x, y, row in zip(xs, ys, rows, strict=True)
    ]


def _labelled(points: list[tuple[float, float, dict[str, Any]]], gap: float = 40) -> set[int]:
    """Indexes of the points whose sparsity is written under the axis: the last one, and then
    every one at least ``gap`` pixels left of the previous label."""
    chosen: set[int] = set()
    last = math.inf
    for index in range(len(points) - 1, -1, -1):
        if last - points[index][0] >= gap:
            chosen.add(index)
            last = points[index][0]
    return chosen


def curve_svg(rounds: list[dict[str, Any]], title: str) -> str:
    points = _points(rounds)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="14">{_escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="black"/>',
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 12}" text-anchor="middle">sparsity (log scale of density)</text>',
        f'<text x="18" y="{HEIGHT / 2}" text-anchor="middle" transform="rotate(-90 18 {HEIGHT / 2})">test accuracy</text>',
    ]
    if points:
        low, high = points[0][2]["_ylow"], points[0][2]["_yhigh"]
        for value, y in ((low, HEIGHT - BOTTOM), (high, TOP)):
            parts.append(f'<text x="{LEFT - 6}" y="{y + 4}" text-anchor="end">{value:.0%}</text>')
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
        labelled = _labelled(points)
        for index, (x, y, row) in enumerate(points):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#1f77b4"/>')
            parts.append(
                f'<text x="{x:.1f}" y="{y - 8:.1f}" text-anchor="middle" font-size="10">'
                f"{row['test_accuracy']:.1%}</text>"
            )
            if index not in labelled:
                continue
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                f'font-size="10">{row["sparsity"]:.1%}</text>'
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def curve_png(rounds: list[dict[str, Any]], title: str) -> bytes:
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise Unsupported("a .png report needs Pillow", "pip install pillow, or use .svg") from None
    import io

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    draw.text((WIDTH / 2, 12), title, fill="black", anchor="mt")
    draw.line([(LEFT, HEIGHT - BOTTOM), (WIDTH - RIGHT, HEIGHT - BOTTOM)], fill="black")
    draw.line([(LEFT, TOP), (LEFT, HEIGHT - BOTTOM)], fill="black")
    draw.text(
        (WIDTH / 2, HEIGHT - 14), "sparsity (log scale of density)", fill="black", anchor="mm"
    )
    points = _points(rounds)
    if points:
        low, high = points[0][2]["_ylow"], points[0][2]["_yhigh"]
        draw.text((LEFT - 6, HEIGHT - BOTTOM), f"{low:.0%}", fill="black", anchor="rm")
        draw.text((LEFT - 6, TOP), f"{high:.0%}", fill="black", anchor="rm")
        draw.line([(x, y) for x, y, _ in points], fill=(31, 119, 180), width=2)
        labelled = _labelled(points)
        for index, (x, y, row) in enumerate(points):
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(31, 119, 180))
            draw.text((x, y - 8), f"{row['test_accuracy']:.1%}", fill="black", anchor="mb")
            if index in labelled:
                draw.text(
                    (x, HEIGHT - BOTTOM + 6), f"{row['sparsity']:.1%}", fill="black", anchor="mt"
                )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
