"""A create's INSERT no longer needs the resource's lock taken before it.

The lock used to be a statement of its own before the INSERT, so the INSERT's snapshot saw an
archive that committed while it waited: its `JOIN resource ... archived_at IS NULL` then found
nothing. The BEFORE trigger takes the same lock for every row that becomes live, and reads
the resource after it (a fresh snapshot: the function is VOLATILE); it now also refuses a new
live row on an archived resource, so the INSERT is as safe without the earlier statement:
one round trip less per create (kit/db.py, BENCHMARKS.md "The write cost").

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_HEAD = """
    CREATE OR REPLACE FUNCTION reservation_set_pooled() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        archived boolean;
    BEGIN
        IF NEW.status IN ('held', 'confirmed') AND (TG_OP = 'INSERT'
            OR OLD.status NOT IN ('held', 'confirmed') OR OLD.resource_id <> NEW.resource_id
            OR OLD.quantity <> NEW.quantity OR OLD.during IS DISTINCT FROM NEW.during) THEN
            PERFORM pg_advisory_xact_lock(resource_lock_key(NEW.resource_id));
            PERFORM pg_advisory_xact_lock_shared(20261125, 1);
            IF lower(NEW.during) < (SELECT moved_before FROM history_horizon) THEN
                RAISE EXCEPTION 'reservations before % are history; % starts earlier',
                    (SELECT moved_before FROM history_horizon), lower(NEW.during)
                    USING ERRCODE = 'check_violation',
                          CONSTRAINT = 'reservation_history_horizon';
            END IF;
        END IF;
"""

_POOLED_0003 = """
        SELECT capacity > 1 INTO NEW.pooled FROM resource WHERE id = NEW.resource_id;
"""

_POOLED_AND_LIVE = """
        SELECT capacity > 1, archived_at IS NOT NULL INTO NEW.pooled, archived
            FROM resource WHERE id = NEW.resource_id;
        IF archived AND TG_OP = 'INSERT' AND NEW.status IN ('held', 'confirmed') THEN
            RAISE EXCEPTION 'resource % is archived', NEW.resource_id
                USING ERRCODE = 'no_data_found', CONSTRAINT = 'reservation_resource_live';
        END IF;
"""

_TAIL = """
        IF NOT NEW.pooled AND NEW.quantity > 1 AND NEW.status IN ('held', 'confirmed') THEN
            RAISE EXCEPTION 'resource % has capacity 1; quantity % is too much',
                NEW.resource_id, NEW.quantity
                USING ERRCODE = 'exclusion_violation', CONSTRAINT = 'reservation_capacity';
        END IF;
        RETURN NEW;
    END $$;
"""


# The function as 0003 left it (also what tests/concurrency/test_archive_race.py's control
# runs on).
BEFORE_0011 = _HEAD.replace("    DECLARE\n        archived boolean;\n", "") + _POOLED_0003 + _TAIL


def upgrade() -> None:
    op.execute(_HEAD + _POOLED_AND_LIVE + _TAIL)


def downgrade() -> None:
    op.execute(BEFORE_0011)
