"""Agent keys (docs/agents.md): the `agent` role, and the database's refusal to let an agent
confirm a reservation.

- `api_key.role` may be `agent`: a key an assistant books with on a person's behalf.
- `reservation_agent_confirm`: a BEFORE trigger that refuses (SQLSTATE RS003) a row that
  becomes confirmed (inserted confirmed, or updated to confirmed) when the transaction's
  actor (`reservations.actor`, kit/db.py) is an agent key, or when the row was made by an
  agent key and the actor is not a non-agent key. The API refuses all of this first (403);
  this is the guard that holds whatever the application, or a prompt, gets wrong. Only rows
  that become confirmed pay for it (two primary-key look-ups of `api_key`).

Downgrade: agent keys become revoked viewer keys (the old check knows no `agent`).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_ROLES = "'admin', 'booker', 'viewer'"

_FUNCTION = """
    CREATE FUNCTION reservation_agent_confirm() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        actor text := nullif(current_setting('reservations.actor', true), '');
        actor_role text;
    BEGIN
        IF actor ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
            SELECT role INTO actor_role FROM api_key WHERE id = actor::uuid;
        END IF;
        IF actor_role = 'agent' THEN
            RAISE EXCEPTION 'an agent key may not confirm reservation %', NEW.id
                USING ERRCODE = 'RS003',
                      HINT = 'A person with a booker or admin key confirms an agent''s hold.';
        END IF;
        IF (actor_role IS NULL OR actor_role = 'agent')
           AND EXISTS (SELECT 1 FROM api_key WHERE id = NEW.created_by AND role = 'agent') THEN
            RAISE EXCEPTION 'reservation % was made by an agent key: only a person''s key confirms it',
                NEW.id
                USING ERRCODE = 'RS003',
                      HINT = 'Confirm it with a booker or admin key (reservations.actor).';
        END IF;
        RETURN NEW;
    END $$;
"""


def upgrade() -> None:
    op.execute("ALTER TABLE api_key DROP CONSTRAINT api_key_role_check")
    op.execute(
        f"ALTER TABLE api_key ADD CONSTRAINT api_key_role_check CHECK (role IN ({_ROLES}, 'agent'))"
    )
    op.execute(_FUNCTION)
    op.execute(
        """
        CREATE TRIGGER reservation_agent_confirm_insert BEFORE INSERT ON reservation
            FOR EACH ROW WHEN (NEW.status = 'confirmed')
            EXECUTE FUNCTION reservation_agent_confirm();
        CREATE TRIGGER reservation_agent_confirm_update BEFORE UPDATE OF status ON reservation
            FOR EACH ROW WHEN (NEW.status = 'confirmed' AND OLD.status <> 'confirmed')
            EXECUTE FUNCTION reservation_agent_confirm();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER reservation_agent_confirm_update ON reservation;
        DROP TRIGGER reservation_agent_confirm_insert ON reservation;
        DROP FUNCTION reservation_agent_confirm();
        UPDATE api_key SET role = 'viewer', revoked_at = coalesce(revoked_at, now())
            WHERE role = 'agent';
        ALTER TABLE api_key DROP CONSTRAINT api_key_role_check;
        """
    )
    op.execute(f"ALTER TABLE api_key ADD CONSTRAINT api_key_role_check CHECK (role IN ({_ROLES}))")
