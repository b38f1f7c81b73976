"""First-order Taylor importance (Molchanov et al. 2019): |θ · ∂L/∂θ| on labelled batches.

Per weight it is SNIP's connection sensitivity (the gradient summed over ``--batches`` batches,
times the weight, in eval mode); with ``--granularity channel|neuron`` a unit's score is the sum
over every weight the unit removes (structure/allocate.py), the Taylor estimate of the loss change
when the whole unit goes (Torch-Pruning's ``TaylorImportance`` with a sum over the group).
"""

from __future__ import annotations

from prunecli.criteria.registry import register
from prunecli.criteria.snip import Snip


@register
class Taylor(Snip):
    name = "taylor"
    summary = (
        "|θ·∂L/∂θ| summed over each structure group (Molchanov et al. 2019); per weight, SNIP's"
    )
