"""prunecli: prune saved neural-network models, or a live ``torch.nn.Module`` from Python.

``prunecli.prune``, ``prunecli.score``, ``prunecli.inspect`` and ``prunecli.show`` (docs/python.md)
are imported on first use, so importing any part of prunecli stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunecli.version import __version__

if TYPE_CHECKING:
    from prunecli.api import inspect, prune, score, show

__all__ = ["__version__", "inspect", "prune", "score", "show"]

_API = ("inspect", "prune", "score", "show")


def __getattr__(name: str) -> Any:
    """The Python API on first access (PEP 562): prunecli/api/ imports the jobs."""
    if name in _API:
        from prunecli import api

        return getattr(api, name)
    raise AttributeError(f"module 'prunecli' has no attribute {name!r}")
