"""Data for data-driven criteria and training: labelled sets, their sources and batches; imports io and errors."""
