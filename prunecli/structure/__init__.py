"""Structured sparsity: N:M patterns, the MAC counter, channel/neuron/head groups, allocation, shrinking and the ridge refit; imports pruning and the layers below."""
