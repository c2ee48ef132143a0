"""Reminders: which reminders went out, so each goes out once.

- `reminder_sent`: one row per reminder sent, keyed by the reservation, the kind (the lead
  time of a policy's `reminders` as ISO 8601, or `hold` for `hold.expiring`) and the instant it
  was for (the start, or the hold's expiry). A moved reservation, or an extended hold, has a
  new instant and so gets its reminders again; the old rows go when their instant is a day
  past. The worker inserts ON CONFLICT DO NOTHING and appends an event only for the rows it
  inserted, in the same transaction: a crash or a second worker sends nothing twice.
- `resource_sends_reminders`: the resources whose policy has reminders, for the worker.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE reminder_sent (
            reservation_id  uuid NOT NULL,
            resource_id     uuid NOT NULL,
            kind            text NOT NULL,
            at              timestamptz NOT NULL,
            sent_at         timestamptz NOT NULL,
            PRIMARY KEY (reservation_id, kind, at)
        );
        CREATE INDEX reminder_sent_at ON reminder_sent (at);
        CREATE INDEX resource_sends_reminders ON resource (id)
            WHERE jsonb_array_length(coalesce(policy -> 'reminders', '[]'::jsonb)) > 0;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX resource_sends_reminders;
        DROP TABLE reminder_sent;
        """
    )
