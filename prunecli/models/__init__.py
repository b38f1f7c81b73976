"""Models loaded from files or held by the caller (wrap.py): architectures (zoo, factories, Hugging Face) and the loaded module; imports data, io, errors."""
