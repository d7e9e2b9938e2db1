"""Synthetic data (no download): procedural people and animals, data sets, scenes and videos."""
