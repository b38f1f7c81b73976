"""prunecli: prune saved neural-network models, or a live ``torch.nn.Module`` from Python.

``prunecli.prune``, ``prunecli.score``, ``prunecli.inspect``, ``prunecli.evaluate``,
``prunecli.sweep`` and ``prunecli.show`` (docs/python.md)
are imported on first use, so importing any part of prunecli stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunecli.version import __version__

if TYPE_CHECKING:
    from prunecli.api import evaluate, inspect, prune, score, show, sweep

__all__ = ["__version__", "evaluate", "inspect", "prune", "score", "show", "sweep"]

_API = ("evaluate", "inspect", "prune", "score", "show", "sweep")


def __getattr__(name: str) -> Any:
    """The Python API on first access (PEP 562): prunecli/api/ imports the jobs."""
    if name in _API:
        from prunecli import api

        return getattr(api, name)
    raise AttributeError(f"module 'prunecli' has no attribute {name!r}")
