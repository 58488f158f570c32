"""Cross-cutting building blocks: database, errors, logging, request context."""
