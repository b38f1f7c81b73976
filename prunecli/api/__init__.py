"""The Python API: prune, score, inspect and evaluate a live ``torch.nn.Module`` or a saved
model, and sweep methods over sparsities (docs/python.md).

``commands.py`` holds the functions of `prune`, `score` and `inspect`; ``evaluate.py`` those of
`eval` and `sweep`; ``steps.py`` what they share.
"""

from prunecli.api.commands import inspect, prune, score, show
from prunecli.api.evaluate import evaluate, sweep

__all__ = ["evaluate", "inspect", "prune", "score", "show", "sweep"]
