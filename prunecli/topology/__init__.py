"""Paths and nodes of a network: the path network, path flow, and the topology metrics; imports models and below."""
