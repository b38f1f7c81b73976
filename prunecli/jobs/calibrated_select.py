"""Which linear layers a calibrated run (`prune --method wanda|sparsegpt`) prunes: by default
every linear layer inside the blocks; ``--include`` / ``--exclude`` choose among them with the
patterns every method takes (``pruning/prunable.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from prunecli.errors import Unsupported
from prunecli.models.loaded import LoadedModel
from prunecli.pruning.prunable import matches, select_prunable


def choose_linears(
    model: LoadedModel,
    linears: Sequence[str],
    method: str,
    blocks: str,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[str]:
    """The weights of ``linears`` (those of the linear layers inside the blocks, in module
    order; ``blocks``: where the blocks sit, ``model.layers``) that the run prunes, in that
    order.

    ``include`` picks, as for every method, the floating tensors of 2+ dimensions of ``model``
    (its headers) matching any pattern, less those ``exclude`` matches; a pattern matching none
    is refused (exit 2) by :func:`select_prunable`. A pick outside ``linears`` (an embedding,
    the output head, a pooler) is refused (exit 3): the runner only prunes what it runs
    calibration data through. ``exclude`` alone removes weights from ``linears``."""
    if include:
        picked = set(select_prunable(model, include, exclude))
        inside = set(linears)
        for name in model.tensors:
            if name in picked and name not in inside:
                pattern = next(p for p in include if matches(name, p))
                raise Unsupported(
                    f"--include {pattern!r} matches {name}, outside the linear layers of the "
                    f"blocks ({blocks}.*): --method {method} prunes only those",
                    f"narrow the pattern (e.g. --include '{blocks}.*') or add --exclude {name}",
                )
        return [name for name in linears if name in picked]
    names = [name for name in linears if not any(matches(name, p) for p in exclude)]
    if not names:
        raise Unsupported(
            f"{model.source}: --exclude leaves no linear layer inside the blocks to prune",
            "exclude fewer layers",
        )
    return names
