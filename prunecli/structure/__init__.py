"""Structured sparsity: N:M patterns now (channel, neuron and head groups later); imports pruning and the layers below."""
