"""Evaluation of a model: accuracy, perplexity, similarity to a reference, latency; imports training, calibration, models, data."""
