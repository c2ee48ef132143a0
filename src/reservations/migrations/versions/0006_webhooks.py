"""Webhooks: endpoints a tenant registers, a per-endpoint delivery queue filled from the
outbox (migration 0004), and the log of every delivery attempt.

- `webhook_endpoint`: URL, event-type filter (empty: every type), the signing secret (kept
  in the clear: it must sign every delivery, so it cannot be hashed), enabled or disabled
  with a reason, and the failure streak that disables it. `registered_snapshot` is the
  snapshot of the registering statement: the endpoint receives exactly the events whose
  transactions it could not see (committed after it was registered).
- `webhook_fanout`: per endpoint, the (txid, id) position in the tenant's outbox up to which
  events have been copied into the queue; advanced in the same transaction as the copy.
- `webhook_stream`: per (endpoint, resource), the highest `resource_seq` the fan-out has
  considered. The outbox's (txid, id) order is not commit order, so an event can reach the
  fan-out before an earlier event of its resource; the fan-out then takes every event of the
  resource between this mark and the new one at once (they are all committed: the
  per-resource counter stays locked until commit). Each (endpoint, resource) queue is thus
  gap-free in `resource_seq` order, which is what lets the dispatcher deliver in order by
  looking only at the queue.
- `webhook_delivery`: one message per (endpoint, event), `pending` until `delivered` or
  `dead` (gave up). Its id is the `webhook-id` on the wire, the same on every retry.
  `locked_until`/`claim`: the lease of the worker sending it (a crashed worker's claim
  returns when the lease ends).
- `webhook_attempt`: one row per HTTP attempt (status code, latency, error).

Revision ID: 0006
Revises: 0005a
Create Date: 2026-11-27
"""

from alembic import op

revision = "0006"
down_revision = "0005a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE webhook_endpoint (
            id                    uuid PRIMARY KEY,
            tenant_id             uuid NOT NULL REFERENCES tenant (id),
            url                   text NOT NULL,
            description           text NOT NULL DEFAULT '',
            event_types           text[] NOT NULL DEFAULT '{}',
            secret                text NOT NULL,
            enabled               boolean NOT NULL DEFAULT true,
            disabled_reason       text,
            disabled_at           timestamptz,
            failing_since         timestamptz,
            consecutive_failures  integer NOT NULL DEFAULT 0,
            registered_snapshot   pg_snapshot NOT NULL,
            version               integer NOT NULL DEFAULT 1,
            created_at            timestamptz NOT NULL,
            updated_at            timestamptz NOT NULL
        );
        CREATE INDEX webhook_endpoint_tenant ON webhook_endpoint (tenant_id, id);

        CREATE TABLE webhook_fanout (
            endpoint_id  uuid PRIMARY KEY REFERENCES webhook_endpoint (id) ON DELETE CASCADE,
            tenant_id    uuid NOT NULL,
            after_txid   xid8 NOT NULL,
            after_id     bigint NOT NULL
        );

        CREATE TABLE webhook_stream (
            endpoint_id  uuid NOT NULL REFERENCES webhook_endpoint (id) ON DELETE CASCADE,
            resource_id  uuid NOT NULL,
            last_seq     bigint NOT NULL,
            PRIMARY KEY (endpoint_id, resource_id)
        );

        CREATE TABLE webhook_delivery (
            id                uuid PRIMARY KEY,
            endpoint_id       uuid NOT NULL REFERENCES webhook_endpoint (id) ON DELETE CASCADE,
            event_id          bigint,
            event_type        text NOT NULL,
            resource_id       uuid,
            resource_seq      bigint,
            status            text NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'delivered', 'dead')),
            attempts          integer NOT NULL DEFAULT 0,
            next_attempt_at   timestamptz NOT NULL,
            locked_until      timestamptz,
            claim             uuid,
            first_attempt_at  timestamptz,
            finished_at       timestamptz,
            created_at        timestamptz NOT NULL,
            UNIQUE (endpoint_id, event_id)
        );
        CREATE INDEX webhook_delivery_due ON webhook_delivery (next_attempt_at)
            WHERE status = 'pending';
        CREATE INDEX webhook_delivery_order
            ON webhook_delivery (endpoint_id, resource_id, resource_seq)
            WHERE status = 'pending';
        CREATE INDEX webhook_delivery_finished ON webhook_delivery (finished_at)
            WHERE status <> 'pending';

        CREATE TABLE webhook_attempt (
            id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            delivery_id      uuid NOT NULL REFERENCES webhook_delivery (id) ON DELETE CASCADE,
            endpoint_id      uuid NOT NULL,
            attempt          integer NOT NULL,
            outcome          text NOT NULL CHECK (outcome IN ('delivered', 'failed', 'dead')),
            status_code      integer,
            latency_ms       integer,
            error            text,
            attempted_at     timestamptz NOT NULL,
            next_attempt_at  timestamptz
        );
        CREATE INDEX webhook_attempt_log ON webhook_attempt (endpoint_id, id);
        CREATE INDEX webhook_attempt_delivery ON webhook_attempt (delivery_id);
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE webhook_attempt, webhook_delivery, webhook_stream, webhook_fanout,"
        " webhook_endpoint"
    )
