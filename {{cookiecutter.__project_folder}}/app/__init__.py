"""The service: an HTTP API, a task worker and a scheduler sharing one codebase."""
