"""The waitlist's bound per API key: count a key's waiting entries by index.

The bound per resource counts through `waitlist_waiting` (resource_id, created_at, id), which
is already partial on waiting entries.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX waitlist_waiting_by_key ON waitlist_entry (created_by)"
        " WHERE status = 'waiting'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX waitlist_waiting_by_key")
