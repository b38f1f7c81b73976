"""Paths and nodes of a network: the path network, path flow, the topology metrics, and NPB's node-path integer program and path repair; imports models and below."""
