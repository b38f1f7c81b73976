"""The in-memory pruning engine: prunable tensors, allocation, selection, schedules, masks on a live module; imports models, data, io, errors."""
