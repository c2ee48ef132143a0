"""Booking policy on resources, buffers in `during`, pooled capacity, bookings.

- resource.policy (jsonb): rules; its buffer_before/buffer_after are ISO 8601 durations that
  PostgreSQL reads as intervals when it computes `during`.
- Pooled capacity: reservations of a resource with capacity > 1 are `pooled`. The exclusion
  constraint keeps guarding every unit resource; a constraint trigger guards pooled ones by
  summing live quantities under the resource's advisory lock (the same lock key the
  application takes). Both are in the database, so no writer can skip them.
- The exclusion constraint becomes DEFERRABLE (INITIALLY IMMEDIATE): moving a whole series in
  one transaction may pass through states where two of its own occurrences overlap.
- booking: groups reservations made together (a series, several resources, or both).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE resource ADD COLUMN policy jsonb NOT NULL DEFAULT '{}';

        CREATE TABLE booking (
            id           uuid PRIMARY KEY,
            tenant_id    uuid NOT NULL REFERENCES tenant (id),
            rrule        text,
            exdates      jsonb NOT NULL DEFAULT '[]',
            timezone     text NOT NULL,
            mode         text NOT NULL CHECK (mode IN ('all-or-nothing', 'skip-conflicts')),
            customer     text,
            metadata     jsonb NOT NULL DEFAULT '{}',
            version      integer NOT NULL DEFAULT 1,
            created_by   uuid NOT NULL REFERENCES api_key (id),
            created_at   timestamptz NOT NULL,
            updated_at   timestamptz NOT NULL,
            UNIQUE (tenant_id, id)
        );
        CREATE INDEX booking_tenant ON booking (tenant_id, id);

        ALTER TABLE reservation
            ADD COLUMN pooled boolean NOT NULL DEFAULT false,
            ADD COLUMN booking_id uuid,
            ADD FOREIGN KEY (tenant_id, booking_id) REFERENCES booking (tenant_id, id);
        CREATE INDEX reservation_booking ON reservation (booking_id, start_at, id)
            WHERE booking_id IS NOT NULL;

        ALTER TABLE reservation DROP CONSTRAINT reservation_no_overlap;
        ALTER TABLE reservation ADD CONSTRAINT reservation_no_overlap EXCLUDE USING gist
            (resource_id WITH =, during WITH &&)
            WHERE (status IN ('held', 'confirmed') AND NOT pooled)
            DEFERRABLE INITIALLY IMMEDIATE;
        CREATE INDEX reservation_tenant_held ON reservation (tenant_id, expires_at)
            WHERE status = 'held';
        CREATE INDEX reservation_pooled_live ON reservation USING gist (resource_id, during)
            WHERE status IN ('held', 'confirmed') AND pooled;

        -- The per-resource advisory-lock key, as kit.ids.lock_key computes it: the id's last
        -- eight bytes as a signed 64-bit integer.
        CREATE FUNCTION resource_lock_key(resource uuid) RETURNS bigint
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            RETURN ('x' || right(replace(resource::text, '-', ''), 16))::bit(64)::bigint;

        -- A reservation is pooled exactly when its resource has capacity > 1; nobody chooses.
        -- A live row that can change usage takes the resource's lock before it reads the
        -- capacity, so a capacity change cannot slip between the read and the guards; and a
        -- unit resource's live reservation uses exactly one unit.
        CREATE FUNCTION reservation_set_pooled() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status IN ('held', 'confirmed') AND (TG_OP = 'INSERT'
                OR OLD.status NOT IN ('held', 'confirmed') OR OLD.resource_id <> NEW.resource_id
                OR OLD.quantity <> NEW.quantity OR OLD.during IS DISTINCT FROM NEW.during) THEN
                PERFORM pg_advisory_xact_lock(resource_lock_key(NEW.resource_id));
            END IF;
            SELECT capacity > 1 INTO NEW.pooled FROM resource WHERE id = NEW.resource_id;
            IF NOT NEW.pooled AND NEW.quantity > 1 AND NEW.status IN ('held', 'confirmed') THEN
                RAISE EXCEPTION 'resource % has capacity 1; quantity % is too much',
                    NEW.resource_id, NEW.quantity
                    USING ERRCODE = 'exclusion_violation', CONSTRAINT = 'reservation_capacity';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER reservation_set_pooled BEFORE INSERT OR UPDATE ON reservation
            FOR EACH ROW EXECUTE FUNCTION reservation_set_pooled();

        -- Pooled capacity: at every instant of NEW.during, the live quantities of the resource
        -- sum to at most its capacity. The advisory lock serializes the check with every other
        -- writer of the resource; this function is VOLATILE, so after the lock its query sees
        -- every transaction that committed meanwhile (READ COMMITTED).
        CREATE FUNCTION reservation_check_capacity() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            cap integer;
            peak bigint;
        BEGIN
            PERFORM pg_advisory_xact_lock(resource_lock_key(NEW.resource_id));
            SELECT capacity INTO cap FROM resource WHERE id = NEW.resource_id;
            WITH o AS (
                SELECT during, quantity FROM reservation
                WHERE resource_id = NEW.resource_id AND status IN ('held', 'confirmed')
                  AND pooled AND during && NEW.during
            ), ev AS (
                SELECT greatest(lower(during), lower(NEW.during)) AS t, quantity AS d FROM o
                UNION ALL
                SELECT upper(during), -quantity FROM o WHERE upper(during) < upper(NEW.during)
            )
            SELECT max(run) INTO peak FROM (SELECT sum(d) OVER (ORDER BY t, d) AS run FROM ev) x;
            IF peak > cap THEN
                RAISE EXCEPTION 'live reservations of resource % would use % of % units',
                    NEW.resource_id, peak, cap
                    USING ERRCODE = 'exclusion_violation', CONSTRAINT = 'reservation_capacity';
            END IF;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER reservation_capacity AFTER INSERT ON reservation
            DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW
            WHEN (NEW.pooled AND NEW.status IN ('held', 'confirmed'))
            EXECUTE FUNCTION reservation_check_capacity();
        -- On UPDATE only when usage can grow. Confirming a hold (live to live, same range)
        -- must not wait for the resource lock while holding the row lock that a booking
        -- under that lock may be about to take (expiring stale holds): a deadlock.
        CREATE CONSTRAINT TRIGGER reservation_capacity_update AFTER UPDATE ON reservation
            DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW
            WHEN (NEW.pooled AND NEW.status IN ('held', 'confirmed') AND (
                NOT OLD.pooled OR OLD.status NOT IN ('held', 'confirmed')
                OR OLD.resource_id <> NEW.resource_id OR OLD.quantity < NEW.quantity
                OR NOT OLD.during @> NEW.during))
            EXECUTE FUNCTION reservation_check_capacity();

        -- A capacity change re-derives which guard watches each live reservation, so the
        -- invariant never rests on the application: moving to unit capacity puts them under
        -- the exclusion constraint (checked right here), and lowering a pooled capacity is
        -- checked against their peak usage.
        CREATE FUNCTION resource_capacity_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            peak bigint;
        BEGIN
            PERFORM pg_advisory_xact_lock(resource_lock_key(NEW.id));
            UPDATE reservation SET pooled = (NEW.capacity > 1)
            WHERE resource_id = NEW.id AND status IN ('held', 'confirmed')
              AND pooled <> (NEW.capacity > 1);
            IF NEW.capacity < OLD.capacity THEN
                WITH o AS (
                    SELECT during, quantity FROM reservation
                    WHERE resource_id = NEW.id AND status IN ('held', 'confirmed')
                ), ev AS (
                    SELECT lower(during) AS t, quantity AS d FROM o
                    UNION ALL SELECT upper(during), -quantity FROM o
                )
                SELECT max(run) INTO peak
                FROM (SELECT sum(d) OVER (ORDER BY t, d) AS run FROM ev) x;
                IF peak > NEW.capacity THEN
                    RAISE EXCEPTION 'live reservations of resource % use % units, more than %',
                        NEW.id, peak, NEW.capacity
                        USING ERRCODE = 'exclusion_violation', CONSTRAINT = 'reservation_capacity';
                END IF;
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER resource_capacity_changed AFTER UPDATE OF capacity ON resource
            FOR EACH ROW WHEN (OLD.capacity IS DISTINCT FROM NEW.capacity)
            EXECUTE FUNCTION resource_capacity_changed();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER resource_capacity_changed ON resource;
        DROP FUNCTION resource_capacity_changed();
        DROP TRIGGER reservation_capacity_update ON reservation;
        DROP TRIGGER reservation_capacity ON reservation;
        DROP TRIGGER reservation_set_pooled ON reservation;
        DROP FUNCTION reservation_check_capacity(), reservation_set_pooled(),
            resource_lock_key(uuid);
        DROP INDEX reservation_pooled_live, reservation_tenant_held;
        ALTER TABLE reservation DROP CONSTRAINT reservation_no_overlap;
        ALTER TABLE reservation ADD CONSTRAINT reservation_no_overlap EXCLUDE USING gist
            (resource_id WITH =, during WITH &&) WHERE (status IN ('held', 'confirmed'));
        ALTER TABLE reservation DROP COLUMN booking_id, DROP COLUMN pooled;
        DROP TABLE booking;
        ALTER TABLE resource DROP COLUMN policy;
        """
    )
