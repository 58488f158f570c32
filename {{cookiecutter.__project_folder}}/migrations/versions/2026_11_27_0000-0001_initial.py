"""The starting point of the schema; later revisions build on it.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 00:00:00+00:00
"""

from collections.abc import Sequence

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing yet: the revision every project has, whichever options it was created with."""


def downgrade() -> None:
    """Nothing to undo."""
