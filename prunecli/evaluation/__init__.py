"""Evaluating pruned models: metrics, sweeps and their plots; imports pruning and below."""
