"""Out-of-core selection and writing for models bigger than memory, one tensor at a time; imports pruning and below."""
