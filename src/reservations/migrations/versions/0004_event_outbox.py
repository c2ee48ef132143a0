"""The transactional outbox: every change of a reservation or resource writes an event row,
in the same transaction, from a trigger (so no code path can forget it).

- `event`: one row per change, with the object after it (`data`), the resource's sequence
  number (`resource_seq`: 1, 2, 3... per resource, in commit order, because the counter row
  stays locked until the writer commits), and the writer's transaction id (`txid`).
- Readers that follow a tenant's whole stream (the live stream, webhook fan-out) order by
  (txid, id) and only read events of transactions older than every one still running
  (`txid < pg_snapshot_xmin(pg_current_snapshot())`), so a slow transaction's events are
  never skipped by a reader that has already moved past a later one.
- `resource_event_seq`: the per-resource counter; made with the resource.
- Types: reservation.held / .created (inserted held / confirmed), .confirmed, .cancelled,
  .expired, .rescheduled (range changed), .updated (customer or metadata); resource.created,
  .updated, .archived. A change of only `pooled` (a capacity change re-deriving the guard)
  is not an event.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE resource_event_seq (
            resource_id  uuid PRIMARY KEY REFERENCES resource (id),
            last         bigint NOT NULL DEFAULT 0
        );
        INSERT INTO resource_event_seq (resource_id) SELECT id FROM resource;

        CREATE TABLE event (
            id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant_id     uuid NOT NULL,
            resource_id   uuid NOT NULL,
            resource_seq  bigint NOT NULL,
            type          text NOT NULL,
            subject_id    uuid NOT NULL,
            data          jsonb NOT NULL,
            txid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
            created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
            UNIQUE (resource_id, resource_seq)
        );
        CREATE INDEX event_tenant_order ON event (tenant_id, txid, id);
        CREATE INDEX event_order ON event (txid, id);

        CREATE FUNCTION event_append(tenant uuid, resource uuid, kind text, subject uuid,
                                     body jsonb) RETURNS void LANGUAGE plpgsql AS $$
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

        CREATE FUNCTION reservation_event() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            kind text;
        BEGIN
            IF TG_OP = 'INSERT' THEN
                kind := CASE NEW.status WHEN 'held' THEN 'reservation.held'
                                        ELSE 'reservation.created' END;
            ELSIF NEW.status <> OLD.status THEN
                kind := 'reservation.' || NEW.status;
            ELSIF NEW.start_at <> OLD.start_at OR NEW.end_at <> OLD.end_at
                  OR NEW.during <> OLD.during THEN
                kind := 'reservation.rescheduled';
            ELSIF NEW.customer IS DISTINCT FROM OLD.customer OR NEW.metadata <> OLD.metadata
                  OR NEW.quantity <> OLD.quantity OR NEW.expires_at IS DISTINCT FROM OLD.expires_at THEN
                kind := 'reservation.updated';
            ELSE
                RETURN NULL;
            END IF;
            PERFORM event_append(NEW.tenant_id, NEW.resource_id, kind, NEW.id,
                jsonb_build_object(
                    'id', NEW.id, 'resource_id', NEW.resource_id, 'booking_id', NEW.booking_id,
                    'start', NEW.start_at, 'end', NEW.end_at, 'status', NEW.status,
                    'quantity', NEW.quantity, 'expires_at', NEW.expires_at,
                    'customer', NEW.customer, 'metadata', NEW.metadata,
                    'version', NEW.version, 'updated_at', NEW.updated_at));
            RETURN NULL;
        END $$;
        CREATE TRIGGER reservation_event AFTER INSERT OR UPDATE ON reservation
            FOR EACH ROW EXECUTE FUNCTION reservation_event();

        CREATE FUNCTION resource_event() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            kind text;
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO resource_event_seq (resource_id) VALUES (NEW.id);
                kind := 'resource.created';
            ELSIF NEW.archived_at IS NOT NULL AND OLD.archived_at IS NULL THEN
                kind := 'resource.archived';
            ELSIF NEW.version <> OLD.version THEN
                kind := 'resource.updated';
            ELSE
                RETURN NULL;
            END IF;
            PERFORM event_append(NEW.tenant_id, NEW.id, kind, NEW.id,
                jsonb_build_object(
                    'id', NEW.id, 'name', NEW.name, 'capacity', NEW.capacity,
                    'timezone', NEW.timezone, 'tags', to_jsonb(NEW.tags),
                    'metadata', NEW.metadata, 'policy', NEW.policy, 'version', NEW.version,
                    'archived_at', NEW.archived_at, 'updated_at', NEW.updated_at));
            RETURN NULL;
        END $$;
        CREATE TRIGGER resource_event AFTER INSERT OR UPDATE ON resource
            FOR EACH ROW EXECUTE FUNCTION resource_event();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER resource_event ON resource;
        DROP TRIGGER reservation_event ON reservation;
        DROP FUNCTION resource_event(), reservation_event(),
            event_append(uuid, uuid, text, uuid, jsonb);
        DROP TABLE event, resource_event_seq;
        """
    )
