"""prunecli: prune saved neural-network models."""

__version__ = "0.1.0"
