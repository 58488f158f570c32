"""The example domain: orders that a worker processes in the background."""
