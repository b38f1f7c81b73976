"""Models loaded from files: architectures (zoo, factories, Hugging Face) and the loaded module; imports data, io, errors."""
