"""Calendar feeds and the tamper-evident audit log.

- `feed`: a secret-token iCalendar feed of one resource or of one API key's reservations. The
  token's first 12 characters (`prefix`) find the row; only a SHA-256 of the rest is stored.
  `revoked_at` set: the feed answers 404 from then on.
- `audit_log`: one row per changed row of `resource`, `reservation` (live and history),
  `booking`, `api_key` and `feed`, written by AFTER triggers in the writer's transaction (so
  no code path can skip it): who (`actor`: what the application put in the transaction-local
  setting `reservations.actor`, an API key id or `system:<job>`; NULL for raw SQL), the
  request id (`reservations.request_id`), the action (insert, update, delete), the object
  and its row before and after as JSON (secrets left out), the tenant, the writer's
  transaction id and the time. An UPDATE that changes nothing is not recorded. Inserts into
  `reservation_history` are not recorded: its only writer is the history job, whose delete
  from `reservation` (actor `system:history`, the row in `before`) is.
- `audit_seal`: the hash chain, kept apart so that both tables are insert-only. A sealer
  (reservations.audit.tasks) appends one row per audit row, in (txid, id) order, only for
  transactions older than every one still running: position `seq` (1, 2, 3...) and
  `hash = sha256(previous hash || canonical bytes of the audit row and seq)`
  (reservations.audit.chain). Hashing in the writer's transaction would need one global lock
  held by every writer until it commits.
- Append-only: triggers refuse UPDATE, DELETE and TRUNCATE on both tables, for every role.
  A superuser can still disable triggers (or use session_replication_role = replica); that
  is what the chain is for: `reservations audit verify` finds the first position whose row
  was changed or removed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from alembic import op

# Made in the `feeds` branch next to 0005 (webhooks); re-chain after 0005 when merging.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Audited tables: (table, object type, columns left out of before/after, operations).
_AUDITED = (
    ("resource", "resource", "", "INSERT OR UPDATE OR DELETE"),
    ("reservation", "reservation", "", "INSERT OR UPDATE OR DELETE"),
    ("reservation_history", "reservation", "", "UPDATE OR DELETE"),
    ("booking", "booking", "", "INSERT OR UPDATE OR DELETE"),
    ("api_key", "api_key", ", 'secret_hash'", "INSERT OR UPDATE OR DELETE"),
    ("feed", "feed", ", 'secret_hash'", "INSERT OR UPDATE OR DELETE"),
)


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE api_key ADD CONSTRAINT api_key_tenant_id_key UNIQUE (tenant_id, id);

        CREATE TABLE feed (
            id           uuid PRIMARY KEY,
            tenant_id    uuid NOT NULL REFERENCES tenant (id),
            resource_id  uuid,
            api_key_id   uuid,
            prefix       text NOT NULL UNIQUE,
            secret_hash  bytea NOT NULL,
            label        text NOT NULL DEFAULT '',
            created_by   uuid NOT NULL REFERENCES api_key (id),
            created_at   timestamptz NOT NULL,
            revoked_at   timestamptz,
            FOREIGN KEY (tenant_id, resource_id) REFERENCES resource (tenant_id, id),
            FOREIGN KEY (tenant_id, api_key_id) REFERENCES api_key (tenant_id, id),
            CHECK ((resource_id IS NULL) <> (api_key_id IS NULL))
        );
        CREATE INDEX feed_tenant ON feed (tenant_id, id);

        CREATE TABLE audit_log (
            id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant_id    uuid NOT NULL,
            actor        text,
            request_id   text,
            action       text NOT NULL CHECK (action IN ('insert', 'update', 'delete')),
            object_type  text NOT NULL,
            object_id    uuid NOT NULL,
            before       jsonb,
            after        jsonb,
            txid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
            changed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX audit_log_order ON audit_log (txid, id);
        CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);
        CREATE INDEX audit_log_object ON audit_log (tenant_id, object_id, id);
        CREATE INDEX audit_log_actor ON audit_log (tenant_id, actor, id);

        CREATE TABLE audit_seal (
            seq        bigint PRIMARY KEY CHECK (seq >= 1),
            audit_id   bigint NOT NULL UNIQUE,
            txid       xid8 NOT NULL,
            hash       bytea NOT NULL CHECK (length(hash) = 32),
            sealed_at  timestamptz NOT NULL DEFAULT clock_timestamp()
        );

        CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Audit rows are never changed or removed.';
        END $$;
        CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_append_only();
        CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
        CREATE TRIGGER audit_seal_append_only BEFORE UPDATE OR DELETE ON audit_seal
            FOR EACH ROW EXECUTE FUNCTION audit_append_only();
        CREATE TRIGGER audit_seal_no_truncate BEFORE TRUNCATE ON audit_seal
            FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

        -- TG_ARGV[0]: the object type; the rest: columns never copied into the log.
        CREATE FUNCTION audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            hidden text[] := TG_ARGV[1:];
            old_row jsonb;
            new_row jsonb;
            row_ jsonb;
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                old_row := to_jsonb(OLD) - hidden;
            END IF;
            IF TG_OP <> 'DELETE' THEN
                new_row := to_jsonb(NEW) - hidden;
            END IF;
            IF TG_OP = 'UPDATE' AND old_row = new_row THEN
                RETURN NULL;
            END IF;
            row_ := coalesce(new_row, old_row);
            INSERT INTO audit_log (tenant_id, actor, request_id, action, object_type,
                                   object_id, before, after)
            VALUES ((row_->>'tenant_id')::uuid,
                    nullif(current_setting('reservations.actor', true), ''),
                    nullif(current_setting('reservations.request_id', true), ''),
                    lower(TG_OP), TG_ARGV[0], (row_->>'id')::uuid, old_row, new_row);
            RETURN NULL;
        END $$;
        """
    )
    for table, kind, hidden, ops in _AUDITED:
        op.execute(
            f"CREATE TRIGGER {table}_audit AFTER {ops} ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION audit_change('{kind}'{hidden})"
        )


def downgrade() -> None:
    for table, _, _, _ in reversed(_AUDITED):
        op.execute(f"DROP TRIGGER {table}_audit ON {table}")
    op.execute(
        """
        DROP TABLE audit_seal, audit_log, feed;
        DROP FUNCTION audit_change(), audit_append_only();
        ALTER TABLE api_key DROP CONSTRAINT api_key_tenant_id_key;
        """
    )
