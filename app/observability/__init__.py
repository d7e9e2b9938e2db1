"""Observability: Prometheus metrics (also across worker processes), structured logs and the
redaction of credentials in them."""
