"""Helpers for development and tests; never imported by the service itself."""
