"""Tenants, API keys, resources, reservations under the exclusion constraint, idempotency.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.execute(
        """
        CREATE TABLE tenant (
            id          uuid PRIMARY KEY,
            name        text NOT NULL UNIQUE,
            created_at  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE api_key (
            id           uuid PRIMARY KEY,
            tenant_id    uuid NOT NULL REFERENCES tenant (id),
            prefix       text NOT NULL UNIQUE,
            secret_hash  bytea NOT NULL,
            role         text NOT NULL CHECK (role IN ('admin', 'booker', 'viewer')),
            label        text NOT NULL DEFAULT '',
            created_at   timestamptz NOT NULL DEFAULT now(),
            expires_at   timestamptz,
            revoked_at   timestamptz
        );
        CREATE INDEX api_key_tenant ON api_key (tenant_id, created_at);

        CREATE TABLE resource (
            id           uuid PRIMARY KEY,
            tenant_id    uuid NOT NULL REFERENCES tenant (id),
            name         text NOT NULL,
            capacity     integer NOT NULL CHECK (capacity >= 1),
            timezone     text NOT NULL,
            tags         text[] NOT NULL DEFAULT '{}',
            metadata     jsonb NOT NULL DEFAULT '{}',
            version      integer NOT NULL DEFAULT 1,
            created_at   timestamptz NOT NULL,
            updated_at   timestamptz NOT NULL,
            archived_at  timestamptz,
            UNIQUE (tenant_id, id)
        );
        CREATE INDEX resource_tenant_live ON resource (tenant_id, id) WHERE archived_at IS NULL;

        -- start_at/end_at: what the customer booked. during: what the exclusion constraint
        -- sees (the booked range widened by turnover buffers once they exist).
        CREATE TABLE reservation (
            id           uuid PRIMARY KEY,
            tenant_id    uuid NOT NULL,
            resource_id  uuid NOT NULL,
            start_at     timestamptz NOT NULL,
            end_at       timestamptz NOT NULL,
            during       tstzrange NOT NULL,
            status       text NOT NULL
                         CHECK (status IN ('held', 'confirmed', 'cancelled', 'expired')),
            quantity     integer NOT NULL DEFAULT 1 CHECK (quantity >= 1),
            expires_at   timestamptz,
            customer     text,
            metadata     jsonb NOT NULL DEFAULT '{}',
            version      integer NOT NULL DEFAULT 1,
            created_by   uuid NOT NULL REFERENCES api_key (id),
            created_at   timestamptz NOT NULL,
            updated_at   timestamptz NOT NULL,
            FOREIGN KEY (tenant_id, resource_id) REFERENCES resource (tenant_id, id),
            CHECK (end_at > start_at),
            CHECK (end_at - start_at <= interval '366 days'),
            CHECK (during @> tstzrange(start_at, end_at)),
            CHECK (status <> 'held' OR expires_at IS NOT NULL),
            CONSTRAINT reservation_no_overlap EXCLUDE USING gist
                (resource_id WITH =, during WITH &&)
                WHERE (status IN ('held', 'confirmed'))
        );
        CREATE INDEX reservation_tenant_start ON reservation (tenant_id, start_at, id);
        CREATE INDEX reservation_resource_start ON reservation (resource_id, start_at, id);
        CREATE INDEX reservation_creator_start ON reservation (created_by, start_at, id);
        CREATE INDEX reservation_customer ON reservation (tenant_id, customer, start_at, id)
            WHERE customer IS NOT NULL;
        CREATE INDEX reservation_held_expiry ON reservation (expires_at) WHERE status = 'held';

        -- One row per (API key, Idempotency-Key): written in the transaction of the effect.
        CREATE TABLE idempotency_record (
            api_key_id   uuid NOT NULL REFERENCES api_key (id),
            key          text NOT NULL,
            fingerprint  bytea NOT NULL,
            status_code  integer NOT NULL,
            body         text NOT NULL,
            headers      jsonb NOT NULL DEFAULT '{}',
            created_at   timestamptz NOT NULL,
            PRIMARY KEY (api_key_id, key)
        );
        CREATE INDEX idempotency_record_created ON idempotency_record (created_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE idempotency_record, reservation, resource, api_key, tenant CASCADE")
