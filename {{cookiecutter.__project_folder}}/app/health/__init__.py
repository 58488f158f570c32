"""Liveness and readiness endpoints for orchestrators and load balancers."""
