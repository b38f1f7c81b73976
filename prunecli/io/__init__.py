"""File formats: safetensors, bitmask, sharded checkpoints, ONNX, .pt2, JSON, npz, and safe paths and atomic writes; imports errors only."""
