"""The availability map's repair reads the outbox: what each reservation event covered, and
where the repair has read up to.

- `event.during`, `event.was_during`: a reservation event's guarded range after the change,
  and before it when the change moved it (NULL otherwise, and for other events). The map
  marks and clears by the guarded range (buffers included), which `data` does not carry, and
  a reschedule must clear the days it left. Columns of the row, not fields of `data`: the
  event stream and webhooks show `data` only, so what clients receive does not change.
- `outbox_position`: per reader of the whole outbox, the (txid, id) up to which it has read
  (the availability map's repair: `availability_map`). A reader takes its advisory lock
  (one reader at a time, the others skip), reads on in the outbox's commit-safe order
  (migration 0004) and moves the row in the same transaction. It starts at the oldest
  transaction still running at upgrade: events of every transaction that could still commit
  are read.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_APPEND = """
        CREATE OR REPLACE FUNCTION event_append(tenant uuid, resource uuid, kind text,
                                                subject uuid, body jsonb) RETURNS void
        LANGUAGE plpgsql AS $$
        DECLARE
            seq bigint;
        BEGIN
            UPDATE resource_event_seq SET last = last + 1 WHERE resource_id = resource
                RETURNING last INTO seq;
            IF seq IS NULL THEN
                INSERT INTO resource_event_seq (resource_id, last) VALUES (resource, 1)
                    ON CONFLICT (resource_id)
                    DO UPDATE SET last = resource_event_seq.last + 1
                    RETURNING last INTO seq;
            END IF;
            INSERT INTO event (tenant_id, resource_id, resource_seq, type, subject_id, data)
                VALUES (tenant, resource, seq, kind, subject, body);
        END $$;
"""

_APPEND_RANGES = """
        CREATE FUNCTION event_append(tenant uuid, resource uuid, kind text, subject uuid,
                                     body jsonb, new_during tstzrange, old_during tstzrange)
        RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            seq bigint;
        BEGIN
            UPDATE resource_event_seq SET last = last + 1 WHERE resource_id = resource
                RETURNING last INTO seq;
            IF seq IS NULL THEN
                INSERT INTO resource_event_seq (resource_id, last) VALUES (resource, 1)
                    ON CONFLICT (resource_id)
                    DO UPDATE SET last = resource_event_seq.last + 1
                    RETURNING last INTO seq;
            END IF;
            INSERT INTO event (tenant_id, resource_id, resource_seq, type, subject_id, data,
                               during, was_during)
                VALUES (tenant, resource, seq, kind, subject, body, new_during, old_during);
        END $$;
        CREATE OR REPLACE FUNCTION event_append(tenant uuid, resource uuid, kind text,
                                                subject uuid, body jsonb) RETURNS void
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM event_append(tenant, resource, kind, subject, body, NULL::tstzrange,
                                 NULL::tstzrange);
        END $$;
"""


def _reservation_event(ranges: bool) -> str:
    """The outbox trigger of migration 0005a; with `ranges`, the event also records the
    guarded range after the change and, if the change moved it, the one before."""
    append = (
        "PERFORM event_append(NEW.tenant_id, NEW.resource_id, kind, NEW.id, body, NEW.during, was);"
        if ranges
        else "PERFORM event_append(NEW.tenant_id, NEW.resource_id, kind, NEW.id, body);"
    )
    return f"""
        CREATE OR REPLACE FUNCTION reservation_event() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            kind text;
            body jsonb;
            was tstzrange;
        BEGIN
            IF TG_OP = 'INSERT' THEN
                kind := CASE WHEN NEW.status = 'held' AND NEW.needs_approval
                                 THEN 'reservation.pending'
                             WHEN NEW.status = 'held' THEN 'reservation.held'
                             ELSE 'reservation.created' END;
            ELSIF NEW.status <> OLD.status THEN
                kind := 'reservation.' || NEW.status;
            ELSIF NEW.start_at <> OLD.start_at OR NEW.end_at <> OLD.end_at
                  OR NEW.during <> OLD.during THEN
                kind := 'reservation.rescheduled';
            ELSIF NEW.customer IS DISTINCT FROM OLD.customer OR NEW.metadata <> OLD.metadata
                  OR NEW.quantity <> OLD.quantity
                  OR NEW.expires_at IS DISTINCT FROM OLD.expires_at THEN
                kind := 'reservation.updated';
            ELSE
                RETURN NULL;
            END IF;
            IF TG_OP = 'UPDATE' THEN
                IF NEW.during <> OLD.during THEN
                    was := OLD.during;
                END IF;
            END IF;
            body := jsonb_build_object(
                'id', NEW.id, 'resource_id', NEW.resource_id, 'booking_id', NEW.booking_id,
                'start', NEW.start_at, 'end', NEW.end_at, 'status', NEW.status,
                'quantity', NEW.quantity, 'expires_at', NEW.expires_at,
                'customer', NEW.customer, 'metadata', NEW.metadata,
                'version', NEW.version, 'updated_at', NEW.updated_at);
            {append}
            RETURN NULL;
        END $$;
    """


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE event ADD COLUMN during tstzrange, ADD COLUMN was_during tstzrange;
        CREATE TABLE outbox_position (
            reader      text PRIMARY KEY,
            after_txid  xid8 NOT NULL,
            after_id    bigint NOT NULL
        );
        INSERT INTO outbox_position (reader, after_txid, after_id)
            VALUES ('availability_map', pg_snapshot_xmin(pg_current_snapshot()), 0);
        """
    )
    op.execute(_APPEND_RANGES)
    op.execute(_reservation_event(ranges=True))


def downgrade() -> None:
    op.execute(_reservation_event(ranges=False))
    op.execute(_APPEND)
    op.execute(
        """
        DROP FUNCTION event_append(uuid, uuid, text, uuid, jsonb, tstzrange, tstzrange);
        DROP TABLE outbox_position;
        ALTER TABLE event DROP COLUMN during, DROP COLUMN was_during;
        """
    )
