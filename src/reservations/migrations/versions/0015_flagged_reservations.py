"""Flagged reservations: a policy change (`PATCH /v1/resources/{id}?affected=flag|cancel`)
marks the future live reservations its rules now refuse, and says why.

- `flagged_at`, `flagged_violations` on `reservation` and `reservation_history` (NULL: not
  flagged; the violations as a refused create's 422 lists them: `[{reason, detail}]`), and
  at the end of `reservation_all`. Nullable columns without a default: adding them rewrites
  nothing and takes no time on a large table.
- The reservation trigger (`reservation_changed`, migrations 0011, 0012, 0013) writes the event
  `reservation.flagged` when a flag is set or its violations change (a change of status,
  range or fields names the event first, as before); its `data` then also carries `flagged`
  (`at`, `violations`). Other events' `data` is as before.
- A reservation that moves (a new start or end, which admission judged under the rules of
  then) loses its flag: `reservation_unflag_moved`, a BEFORE trigger that fires only for
  flagged rows whose range is set.
- `reservation_flagged`: a partial index of the flagged rows by tenant and start, for
  `GET /v1/reservations?flagged=true` (small: only flagged rows are in it).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_VIEW_COLUMNS = (
    "id, tenant_id, resource_id, booking_id, start_at, end_at, during, status, quantity,"
    " expires_at, customer, metadata, version, created_by, created_at, updated_at, pooled,"
    " needs_approval"
)

# The reservation's AFTER trigger (migration 0013), with the flag's event.
_FLAGGED = """
    CREATE OR REPLACE FUNCTION reservation_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        kind text;
        seq bigint;
        old_row jsonb;
        new_row jsonb := to_jsonb(NEW);
        data jsonb;
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
        ELSIF NEW.flagged_at IS NOT NULL
              AND NEW.flagged_violations IS DISTINCT FROM OLD.flagged_violations THEN
            kind := 'reservation.flagged';
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
            data := jsonb_build_object(
                'id', NEW.id, 'resource_id', NEW.resource_id, 'booking_id', NEW.booking_id,
                'start', NEW.start_at, 'end', NEW.end_at, 'status', NEW.status,
                'quantity', NEW.quantity, 'expires_at', NEW.expires_at,
                'customer', NEW.customer, 'metadata', NEW.metadata,
                'checked_in_at', NEW.checked_in_at,
                'version', NEW.version, 'updated_at', NEW.updated_at);
            IF kind = 'reservation.flagged' THEN
                data := data || jsonb_build_object('flagged', jsonb_build_object(
                    'at', NEW.flagged_at, 'violations', NEW.flagged_violations));
            END IF;
            INSERT INTO event (tenant_id, resource_id, resource_seq, type, subject_id,
                               during, was_during, data)
            VALUES (NEW.tenant_id, NEW.resource_id, seq, kind, NEW.id, NEW.during,
                    CASE WHEN TG_OP = 'UPDATE' AND NEW.during <> OLD.during
                         THEN OLD.during END,
                    data);
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

# As migration 0013 left it.
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

_UNFLAG = """
    CREATE FUNCTION reservation_unflag_moved() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.flagged_at IS NOT DISTINCT FROM OLD.flagged_at
           AND (NEW.start_at <> OLD.start_at OR NEW.end_at <> OLD.end_at) THEN
            NEW.flagged_at := NULL;
            NEW.flagged_violations := NULL;
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER reservation_unflag_moved BEFORE UPDATE OF start_at, end_at ON reservation
        FOR EACH ROW WHEN (OLD.flagged_at IS NOT NULL)
        EXECUTE FUNCTION reservation_unflag_moved();
"""


def upgrade() -> None:
    op.execute(
        f"""
        ALTER TABLE reservation
            ADD COLUMN flagged_at timestamptz, ADD COLUMN flagged_violations jsonb;
        ALTER TABLE reservation_history
            ADD COLUMN flagged_at timestamptz, ADD COLUMN flagged_violations jsonb;
        CREATE OR REPLACE VIEW reservation_all AS
            SELECT {_VIEW_COLUMNS}, checked_in_at, false AS in_history, flagged_at,
                   flagged_violations
            FROM reservation
            UNION ALL
            SELECT {_VIEW_COLUMNS}, checked_in_at, true AS in_history, flagged_at,
                   flagged_violations
            FROM reservation_history;
        CREATE INDEX reservation_flagged ON reservation (tenant_id, start_at, id)
            WHERE flagged_at IS NOT NULL;
        """
    )
    op.execute(_FLAGGED)
    op.execute(_UNFLAG)


def downgrade() -> None:
    op.execute(
        f"""
        DROP TRIGGER reservation_unflag_moved ON reservation;
        DROP FUNCTION reservation_unflag_moved();
        DROP INDEX reservation_flagged;
        DROP VIEW reservation_all;
        CREATE VIEW reservation_all AS
            SELECT {_VIEW_COLUMNS}, checked_in_at, false AS in_history FROM reservation
            UNION ALL
            SELECT {_VIEW_COLUMNS}, checked_in_at, true AS in_history FROM reservation_history;
        """
    )
    op.execute(_RANGED)
    op.execute(
        """
        ALTER TABLE reservation DROP COLUMN flagged_at, DROP COLUMN flagged_violations;
        ALTER TABLE reservation_history
            DROP COLUMN flagged_at, DROP COLUMN flagged_violations;
        """
    )
