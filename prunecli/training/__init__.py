"""Training under a mask: the loop, weight transfer, NEQ, distributed runs; imports pruning and below."""
