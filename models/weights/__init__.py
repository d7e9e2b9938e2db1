"""Weights on disk: the model configuration, checkpoints (save, load, verify, import published),
the model zoo, atomic file writes and weight digests."""
