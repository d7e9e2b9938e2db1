"""Rendering: the overlay drawn by /visualize."""
