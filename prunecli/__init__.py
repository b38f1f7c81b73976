"""prunecli: prune saved neural-network models."""

from prunecli.version import __version__

__all__ = ["__version__"]
