"""Weights on disk: the model configuration, checkpoints (save, load, verify, import published),
the model zoo, atomic file writes, weight digests and the check that a loaded model's outputs
are finite."""
