"""The plan of a streamed prune: which tensors share a threshold, and how many zeros each pool
must end with."""

from __future__ import annotations

from dataclasses import dataclass

from prunecli.errors import Unsupported
from prunecli.io.checkpoint import Checkpoint
from prunecli.pruning.allocation import keep_counts, prune_count
from prunecli.streaming.select import FLOATS, Item, KeySpace, Pool
from prunecli.structure.nm import Pattern, check_shapes


@dataclass
class StreamPlan:
    checkpoint: Checkpoint
    names: list[str]
    items: dict[str, Item]
    space: KeySpace
    pools: list[Pool]
    pool_of: dict[str, Pool]


def plan_stream(
    checkpoint: Checkpoint,
    names: list[str],
    method: str,
    scope: str,
    sparsity: float,
    pattern: Pattern | None = None,
) -> StreamPlan:
    """Which tensors share a threshold, and how many zeros each pool must end with (with a
    ``pattern``: one pool per tensor, no threshold; its zeros are counted by a pass)."""
    where = {name: (shard, entry) for name, shard, entry in checkpoint.entries()}
    items = {name: Item(name, *where[name], index) for index, name in enumerate(names)}
    for item in items.values():
        if item.dtype not in FLOATS:
            raise Unsupported(
                f"tensor {item.name!r} ({item.dtype}) is not floating; it cannot be pruned"
            )
    space = KeySpace({item.dtype for item in items.values()}, random=method == "random")
    shapes = {name: item.entry.shape for name, item in items.items()}
    if pattern is not None:
        check_shapes(shapes, pattern)
        pools = [Pool([item], 0, pattern=pattern) for item in items.values()]
        pool_of = {item.name: pool for pool in pools for item in pool.members}
        return StreamPlan(checkpoint, names, items, space, pools, pool_of)
    counts = keep_counts(scope, shapes, sparsity)
    if counts is None:
        total = sum(item.numel for item in items.values())
        pools = [Pool(list(items.values()), prune_count(sparsity, total))]
    else:
        pools = [Pool([item], item.numel - counts[name]) for name, item in items.items()]
    pool_of = {item.name: pool for pool in pools for item in pool.members}
    return StreamPlan(checkpoint, names, items, space, pools, pool_of)
