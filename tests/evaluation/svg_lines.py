"""Reading the lines of a matplotlib SVG with the standard library only: each method's line is a
group ``<g id="method-NAME">`` holding one ``<path>`` (the line) and one ``<use>`` per marker."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"


def line_groups(svg: str | bytes) -> dict[str, ET.Element]:
    """``{gid: group}`` for every element whose id starts with ``method-``, refusing repeats."""
    root = ET.fromstring(svg)
    groups: dict[str, ET.Element] = {}
    for element in root.iter():
        gid = element.get("id", "")
        if gid.startswith("method-"):
            assert gid not in groups, f"{gid} appears twice"
            groups[gid] = element
    return groups


def vertices(group: ET.Element) -> list[tuple[float, float]]:
    """The (x, y) vertices, in SVG pixels (y grows downward), of the group's line path."""
    (path,) = [p for p in group.findall(f"{SVG}path") if "fill: none" in p.get("style", "")]
    pairs = re.findall(r"[ML] (-?[\d.]+) (-?[\d.]+)", path.get("d"))
    return [(float(x), float(y)) for x, y in pairs]


def markers(group: ET.Element) -> list[tuple[float, float]]:
    """The (x, y) of each marker drawn on the line."""
    return [(float(u.get("x")), float(u.get("y"))) for u in group.iter(f"{SVG}use")]
