"""Observability: Prometheus metrics (also across worker processes) and structured logs."""
