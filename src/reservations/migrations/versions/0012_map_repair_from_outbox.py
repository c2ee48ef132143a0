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

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# The reservation's AFTER trigger (migration 0011), recording the ranges in the event row.
_RANGED = """
    CREATE OR REPLACE FUNCTION reservation_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        kind text;
        seq bigint;
        old_row jsonb;
        new_row jsonb := to_jsonb(NEW);
    BEGIN
        -- The audit log (as audit_change('reservation') writes it).
        IF TG_OP = 'UPDATE' THEN
            old_row := to_jsonb(OLD);
        END IF;
        IF TG_OP = 'INSERT' OR old_row <> new_row THEN
            INSERT INTO audit_log (tenant_id, actor, request_id, action, object_type,
                                   object_id, before, after)
            VALUES (NEW.tenant_id, nullif(current_setting('reservations.actor', true), ''),
                    nullif(current_setting('reservations.request_id', true), ''),
                    lower(TG_OP), 'reservation', NEW.id, old_row, new_row);
        END IF;
        -- The outbox (as reservation_event and event_append write it).
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
        END IF;
        IF kind IS NOT NULL THEN
            UPDATE resource_event_seq SET last = last + 1 WHERE resource_id = NEW.resource_id
                RETURNING last INTO seq;
            IF seq IS NULL THEN
                INSERT INTO resource_event_seq AS s (resource_id, last)
                    VALUES (NEW.resource_id, 1)
                    ON CONFLICT (resource_id) DO UPDATE SET last = s.last + 1
                    RETURNING last INTO seq;
            END IF;
            INSERT INTO event (tenant_id, resource_id, resource_seq, type, subject_id,
                               during, was_during, data)
            VALUES (NEW.tenant_id, NEW.resource_id, seq, kind, NEW.id, NEW.during,
                    CASE WHEN TG_OP = 'UPDATE' AND NEW.during <> OLD.during
                         THEN OLD.during END,
                    jsonb_build_object(
                'id', NEW.id, 'resource_id', NEW.resource_id, 'booking_id', NEW.booking_id,
                'start', NEW.start_at, 'end', NEW.end_at, 'status', NEW.status,
                'quantity', NEW.quantity, 'expires_at', NEW.expires_at,
                'customer', NEW.customer, 'metadata', NEW.metadata,
                'version', NEW.version, 'updated_at', NEW.updated_at));
        END IF;
        -- The tenant's longest reservation (as reservation_widen_span keeps it).
        IF TG_OP = 'INSERT' OR NEW.start_at <> OLD.start_at OR NEW.end_at <> OLD.end_at THEN
            PERFORM 1 FROM reservation_span
                WHERE tenant_id = NEW.tenant_id
                  AND longest >= span_of(NEW.start_at, NEW.end_at);
            IF NOT FOUND THEN
                INSERT INTO reservation_span AS s (tenant_id, longest)
                VALUES (NEW.tenant_id, span_of(NEW.start_at, NEW.end_at))
                ON CONFLICT (tenant_id)
                DO UPDATE SET longest = greatest(s.longest, excluded.longest);
            END IF;
        END IF;
        RETURN NULL;
    END $$;
"""

# As migration 0011 left it.
_UNRANGED = """
    CREATE OR REPLACE FUNCTION reservation_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        kind text;
        seq bigint;
        old_row jsonb;
        new_row jsonb := to_jsonb(NEW);
    BEGIN
        -- The audit log (as audit_change('reservation') writes it).
        IF TG_OP = 'UPDATE' THEN
            old_row := to_jsonb(OLD);
        END IF;
        IF TG_OP = 'INSERT' OR old_row <> new_row THEN
            INSERT INTO audit_log (tenant_id, actor, request_id, action, object_type,
                                   object_id, before, after)
            VALUES (NEW.tenant_id, nullif(current_setting('reservations.actor', true), ''),
                    nullif(current_setting('reservations.request_id', true), ''),
                    lower(TG_OP), 'reservation', NEW.id, old_row, new_row);
        END IF;
        -- The outbox (as reservation_event and event_append write it).
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
        END IF;
        IF kind IS NOT NULL THEN
            UPDATE resource_event_seq SET last = last + 1 WHERE resource_id = NEW.resource_id
                RETURNING last INTO seq;
            IF seq IS NULL THEN
                INSERT INTO resource_event_seq AS s (resource_id, last)
                    VALUES (NEW.resource_id, 1)
                    ON CONFLICT (resource_id) DO UPDATE SET last = s.last + 1
                    RETURNING last INTO seq;
            END IF;
            INSERT INTO event (tenant_id, resource_id, resource_seq, type, subject_id, data)
            VALUES (NEW.tenant_id, NEW.resource_id, seq, kind, NEW.id, jsonb_build_object(
                'id', NEW.id, 'resource_id', NEW.resource_id, 'booking_id', NEW.booking_id,
                'start', NEW.start_at, 'end', NEW.end_at, 'status', NEW.status,
                'quantity', NEW.quantity, 'expires_at', NEW.expires_at,
                'customer', NEW.customer, 'metadata', NEW.metadata,
                'version', NEW.version, 'updated_at', NEW.updated_at));
        END IF;
        -- The tenant's longest reservation (as reservation_widen_span keeps it).
        IF TG_OP = 'INSERT' OR NEW.start_at <> OLD.start_at OR NEW.end_at <> OLD.end_at THEN
            PERFORM 1 FROM reservation_span
                WHERE tenant_id = NEW.tenant_id
                  AND longest >= span_of(NEW.start_at, NEW.end_at);
            IF NOT FOUND THEN
                INSERT INTO reservation_span AS s (tenant_id, longest)
                VALUES (NEW.tenant_id, span_of(NEW.start_at, NEW.end_at))
                ON CONFLICT (tenant_id)
                DO UPDATE SET longest = greatest(s.longest, excluded.longest);
            END IF;
        END IF;
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
    op.execute(_RANGED)


def downgrade() -> None:
    op.execute(_UNRANGED)
    op.execute(
        """
        DROP TABLE outbox_position;
        ALTER TABLE event DROP COLUMN during, DROP COLUMN was_during;
        """
    )
