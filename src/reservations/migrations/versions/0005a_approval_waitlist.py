"""Approvals and the waitlist.

- A reservation awaiting approval is a hold (`status = 'held'`, with its expiry) marked
  `needs_approval`: it is live, so the exclusion constraint, the capacity trigger and
  availability all see it (a pending booking that nothing sees is how double bookings on
  approval happen). The API shows it as `pending`. An admin approves (-> confirmed) or
  declines (-> `declined`, a new dead status that frees the range).
- `waitlist_entry`: a client waiting for a range of a resource. The waitlist job promotes the
  first waiting entry that fits into a hold; `waitlist.promoted` goes to the outbox.
- The outbox trigger names a pending insert `reservation.pending`.

Revision ID: 0005a
Revises: 0004
Create Date: 2026-11-25
"""

from alembic import op

revision = "0005a"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = (
    "id, tenant_id, resource_id, booking_id, start_at, end_at, during, status, quantity,"
    " expires_at, customer, metadata, version, created_by, created_at, updated_at, pooled"
)


def _event_function(pending_insert: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION reservation_event() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            kind text;
        BEGIN
            IF TG_OP = 'INSERT' THEN
                kind := CASE WHEN NEW.status = 'held' AND {pending_insert}
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
            PERFORM event_append(NEW.tenant_id, NEW.resource_id, kind, NEW.id,
                jsonb_build_object(
                    'id', NEW.id, 'resource_id', NEW.resource_id, 'booking_id', NEW.booking_id,
                    'start', NEW.start_at, 'end', NEW.end_at, 'status', NEW.status,
                    'quantity', NEW.quantity, 'expires_at', NEW.expires_at,
                    'customer', NEW.customer, 'metadata', NEW.metadata,
                    'version', NEW.version, 'updated_at', NEW.updated_at));
            RETURN NULL;
        END $$;
    """


def upgrade() -> None:
    op.execute(
        f"""
        ALTER TABLE reservation ADD COLUMN needs_approval boolean NOT NULL DEFAULT false;
        ALTER TABLE reservation_history
            ADD COLUMN needs_approval boolean NOT NULL DEFAULT false;
        ALTER TABLE reservation DROP CONSTRAINT reservation_status_check;
        ALTER TABLE reservation ADD CONSTRAINT reservation_status_check
            CHECK (status IN ('held', 'confirmed', 'cancelled', 'expired', 'declined'));
        ALTER TABLE reservation ADD CONSTRAINT reservation_approval_check
            CHECK (NOT needs_approval OR status <> 'confirmed');

        DROP VIEW reservation_all;
        CREATE VIEW reservation_all AS
            SELECT {_COLUMNS}, needs_approval, false AS in_history FROM reservation
            UNION ALL
            SELECT {_COLUMNS}, needs_approval, true AS in_history FROM reservation_history;

        CREATE TABLE waitlist_entry (
            id              uuid PRIMARY KEY,
            tenant_id       uuid NOT NULL,
            resource_id     uuid NOT NULL,
            start_at        timestamptz NOT NULL,
            end_at          timestamptz NOT NULL,
            quantity        integer NOT NULL CHECK (quantity >= 1),
            customer        text,
            hold_seconds    integer NOT NULL CHECK (hold_seconds >= 1),
            status          text NOT NULL
                            CHECK (status IN ('waiting', 'promoted', 'left', 'lapsed')),
            reservation_id  uuid,
            created_by      uuid NOT NULL REFERENCES api_key (id),
            created_at      timestamptz NOT NULL,
            updated_at      timestamptz NOT NULL,
            FOREIGN KEY (tenant_id, resource_id) REFERENCES resource (tenant_id, id),
            CHECK (end_at > start_at),
            CHECK ((status = 'promoted') = (reservation_id IS NOT NULL))
        );
        CREATE INDEX waitlist_waiting ON waitlist_entry (resource_id, created_at, id)
            WHERE status = 'waiting';
        CREATE INDEX waitlist_tenant ON waitlist_entry (tenant_id, created_at, id);
        """
    )
    op.execute(_event_function("NEW.needs_approval"))


def downgrade() -> None:
    op.execute(_event_function("false"))
    op.execute(
        f"""
        DROP TABLE waitlist_entry;
        DROP VIEW reservation_all;
        CREATE VIEW reservation_all AS
            SELECT {_COLUMNS}, false AS in_history FROM reservation
            UNION ALL
            SELECT {_COLUMNS}, true AS in_history FROM reservation_history;
        UPDATE reservation SET status = 'cancelled' WHERE status = 'declined';
        ALTER TABLE reservation DROP CONSTRAINT reservation_approval_check;
        ALTER TABLE reservation DROP CONSTRAINT reservation_status_check;
        ALTER TABLE reservation ADD CONSTRAINT reservation_status_check
            CHECK (status IN ('held', 'confirmed', 'cancelled', 'expired'));
        ALTER TABLE reservation DROP COLUMN needs_approval;
        ALTER TABLE reservation_history DROP COLUMN needs_approval;
        """
    )
