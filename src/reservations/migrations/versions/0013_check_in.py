"""Check-in and no-shows (the `check_in` policy).

- `reservation.checked_in_at` (and in `reservation_history` and `reservation_all`): when the
  booker checked in (`POST /v1/reservations/{id}/check-in`); NULL until then.
- The status `no_show`: a confirmed reservation not checked in by `start + release_after` of
  its resource's policy. It is not live, so the rest of its range is free again (the
  exclusion constraint covers `held` and `confirmed` only).
- `resource_releases_no_shows`: the resources whose policy releases no-shows, so the sweeper
  finds them without reading every resource's policy.
- `reservation_changed()` emits `reservation.checked_in` for a check-in and carries
  `checked_in_at` in every reservation event's data.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_COLUMNS = (
    "id, tenant_id, resource_id, booking_id, start_at, end_at, during, status, quantity,"
    " expires_at, customer, metadata, version, created_by, created_at, updated_at, pooled,"
    " needs_approval"
)
_STATUSES = "'held', 'confirmed', 'cancelled', 'expired', 'declined'"

# The reservation's AFTER trigger as migration 0012 left it, with the check-in.
_CHECKED_IN = """
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
        ELSIF NEW.checked_in_at IS DISTINCT FROM OLD.checked_in_at THEN
            kind := 'reservation.checked_in';
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
                'checked_in_at', NEW.checked_in_at,
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

# As migration 0012 left it.
_BEFORE = """
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


def _view(extra: str) -> str:
    return f"""
        DROP VIEW reservation_all;
        CREATE VIEW reservation_all AS
            SELECT {_COLUMNS}{extra}, false AS in_history FROM reservation
            UNION ALL
            SELECT {_COLUMNS}{extra}, true AS in_history FROM reservation_history;
    """


def upgrade() -> None:
    op.execute(
        f"""
        ALTER TABLE reservation ADD COLUMN checked_in_at timestamptz;
        ALTER TABLE reservation_history ADD COLUMN checked_in_at timestamptz;
        {_view(", checked_in_at")}
        ALTER TABLE reservation DROP CONSTRAINT reservation_status_check;
        ALTER TABLE reservation ADD CONSTRAINT reservation_status_check
            CHECK (status IN ({_STATUSES}, 'no_show'));
        CREATE INDEX resource_releases_no_shows ON resource (id)
            WHERE (policy #>> '{{check_in,release_after}}') IS NOT NULL;
        """
    )
    op.execute(_CHECKED_IN)


def downgrade() -> None:
    op.execute(_BEFORE)
    op.execute(
        f"""
        DROP INDEX resource_releases_no_shows;
        UPDATE reservation SET status = 'cancelled' WHERE status = 'no_show';
        ALTER TABLE reservation DROP CONSTRAINT reservation_status_check;
        ALTER TABLE reservation ADD CONSTRAINT reservation_status_check
            CHECK (status IN ({_STATUSES}));
        {_view("")}
        ALTER TABLE reservation DROP COLUMN checked_in_at;
        ALTER TABLE reservation_history DROP COLUMN checked_in_at;
        """
    )
