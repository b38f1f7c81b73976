"""Calibrated pruning of transformers: calibration data, input statistics, and the block runner; imports pruning, models, data, io."""
