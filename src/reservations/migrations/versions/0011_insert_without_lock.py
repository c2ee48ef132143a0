"""What a create costs PostgreSQL: no lock statement before the INSERT, one AFTER trigger,
no MultiXact on the API key's row.

1. The INSERT no longer needs the resource's lock taken before it.

The lock used to be a statement of its own before the INSERT, so the INSERT's snapshot saw an
archive that committed while it waited: its `JOIN resource ... archived_at IS NULL` then found
nothing. The BEFORE trigger takes the same lock for every row that becomes live, and reads
the resource after it (a fresh snapshot: the function is VOLATILE); it now also refuses a new
live row on an archived resource, so the INSERT is as safe without the earlier statement:
one round trip less per create (kit/db.py, BENCHMARKS.md "The write cost").

2. One AFTER trigger (`reservation_changed`) writes what three did on INSERT and UPDATE: the
audit row, the outbox event (its per-resource number included, `event_append` inlined), and
the tenant's longest span. The same rows as before, in one function call instead of four.
The audit trigger stays for DELETE.

3. API keys are revoked, never deleted: a trigger refuses DELETE and TRUNCATE on `api_key`.
With that, the foreign keys from `reservation.created_by` and `idempotency_record.api_key_id`
to it add nothing (both ids come from the authenticated key, which can never go away) but cost
every create a KEY SHARE lock on the one row of the key it writes with. Concurrent creates of
one key then each made a MultiXact (measured: 5,866 for 5,871 creates at 32 clients). They are
dropped; the other references to `api_key` (bookings, waitlist entries, feeds) stay.

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


_CHANGED = """
    CREATE FUNCTION reservation_changed() RETURNS trigger LANGUAGE plpgsql AS $$
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

_KEYS_KEPT = """
    CREATE FUNCTION api_key_kept() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'API keys are revoked (revoked_at), never deleted'
            USING ERRCODE = 'restrict_violation';
    END $$;
    CREATE TRIGGER api_key_kept BEFORE DELETE ON api_key
        FOR EACH ROW EXECUTE FUNCTION api_key_kept();
    CREATE TRIGGER api_key_kept_truncate BEFORE TRUNCATE ON api_key
        FOR EACH STATEMENT EXECUTE FUNCTION api_key_kept();
"""


def upgrade() -> None:
    op.execute(_HEAD + _POOLED_AND_LIVE + _TAIL)
    op.execute(_CHANGED)
    op.execute(
        """
        DROP TRIGGER reservation_event ON reservation;
        DROP TRIGGER reservation_widen_span ON reservation;
        DROP TRIGGER reservation_audit ON reservation;
        CREATE TRIGGER reservation_audit AFTER DELETE ON reservation
            FOR EACH ROW EXECUTE FUNCTION audit_change('reservation');
        CREATE TRIGGER reservation_changed AFTER INSERT OR UPDATE ON reservation
            FOR EACH ROW EXECUTE FUNCTION reservation_changed();
        """
    )
    op.execute(_KEYS_KEPT)
    op.execute(
        """
        ALTER TABLE reservation DROP CONSTRAINT reservation_created_by_fkey;
        ALTER TABLE idempotency_record DROP CONSTRAINT idempotency_record_api_key_id_fkey;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE idempotency_record ADD CONSTRAINT idempotency_record_api_key_id_fkey
            FOREIGN KEY (api_key_id) REFERENCES api_key (id);
        ALTER TABLE reservation ADD CONSTRAINT reservation_created_by_fkey
            FOREIGN KEY (created_by) REFERENCES api_key (id);
        DROP TRIGGER api_key_kept_truncate ON api_key;
        DROP TRIGGER api_key_kept ON api_key;
        DROP FUNCTION api_key_kept();
        DROP TRIGGER reservation_changed ON reservation;
        DROP TRIGGER reservation_audit ON reservation;
        CREATE TRIGGER reservation_audit AFTER INSERT OR UPDATE OR DELETE ON reservation
            FOR EACH ROW EXECUTE FUNCTION audit_change('reservation');
        CREATE TRIGGER reservation_event AFTER INSERT OR UPDATE ON reservation
            FOR EACH ROW EXECUTE FUNCTION reservation_event();
        CREATE TRIGGER reservation_widen_span AFTER INSERT OR UPDATE OF start_at, end_at
            ON reservation FOR EACH ROW EXECUTE FUNCTION reservation_widen_span();
        DROP FUNCTION reservation_changed();
        """
    )
    op.execute(BEFORE_0011)
