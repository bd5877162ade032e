"""Logs and metrics: structlog rendering for every stdlib logger, Prometheus metrics per app."""
