"""Free/busy feeds: what a feed shows (`content`: `events`, the reservations, as before; or
`freebusy`, when the resource cannot be booked) and a tag as a third target.

- `feed.content`: `events` for every feed made before.
- `feed.tag`: a free/busy feed of the live resources with this tag (kept in the catalog,
  since they may lie on every cluster, as a key's feed is).
- Exactly one target (resource, key or tag); a key's feed is of events only (its
  reservations), a tag's of free/busy only.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE feed
            ADD COLUMN content text NOT NULL DEFAULT 'events'
                CONSTRAINT feed_content CHECK (content IN ('events', 'freebusy')),
            ADD COLUMN tag text;
        ALTER TABLE feed DROP CONSTRAINT feed_check;
        ALTER TABLE feed ADD CONSTRAINT feed_target CHECK (
            num_nonnulls(resource_id, api_key_id, tag) = 1
            AND (api_key_id IS NULL OR content = 'events')
            AND (tag IS NULL OR content = 'freebusy')
        );
        """
    )


def downgrade() -> None:
    # Free/busy feeds have no meaning before this revision: they go (their URLs answer 404).
    op.execute(
        """
        DELETE FROM feed WHERE content = 'freebusy';
        ALTER TABLE feed DROP CONSTRAINT feed_target;
        ALTER TABLE feed DROP COLUMN tag, DROP COLUMN content;
        ALTER TABLE feed ADD CONSTRAINT feed_check
            CHECK ((resource_id IS NULL) <> (api_key_id IS NULL));
        """
    )
