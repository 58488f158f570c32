"""Fixtures of the worker tests."""

from pathlib import Path

import pytest


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    """The file the sample tasks write what they did into."""
    return tmp_path / "trace.txt"
