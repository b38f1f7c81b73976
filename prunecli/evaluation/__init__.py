"""Evaluating models: accuracy, perplexity, similarity to a reference, latency, and the plots of sparsity curves; imports training, calibration, models, data and below."""
