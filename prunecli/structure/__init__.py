"""Structured sparsity: N:M patterns and the MAC counter now (channel, neuron and head groups later); imports pruning and the layers below."""
