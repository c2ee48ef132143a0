"""Sharding by resource: the catalog's shard map and two-phase-commit decisions, and each
cluster's ownership of logical shards and fencing tokens.

Every database gets every table (one schema, one migration history); which ones a database
uses depends on its role:

- catalog (DATABASE_URL): `shard_map` (logical shard -> cluster; `reservations shards move`
  changes it) and `twophase_decision` (the coordinator's durable decision for a cross-shard
  booking: whoever inserts first, the coordinator with 'commit' or the recovery job with
  'abort', decides).
- shard cluster: `shard_owned` (the logical shards this cluster holds now) and
  `resource_fence` (the newest Redlock fencing token this cluster has seen per resource).
  `shard_guard(n)` runs first in every write transaction of a sharded deployment: it waits
  while a move of shard n holds it exclusively, then refuses (SQLSTATE RS001) when shard n is
  not here, so an API instance with a stale map can never write to the old cluster.
  `fence_check(resource, token)` refuses (RS002) a token older than the newest seen.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE shard_map (
            logical     integer PRIMARY KEY CHECK (logical >= 0),
            cluster     text NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE twophase_decision (
            gid           text PRIMARY KEY,
            decision      text NOT NULL CHECK (decision IN ('commit', 'abort')),
            participants  text[] NOT NULL DEFAULT '{}',
            decided_at    timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE shard_owned (
            logical  integer PRIMARY KEY CHECK (logical >= 0),
            since    timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE resource_fence (
            resource_id  uuid PRIMARY KEY,
            token        bigint NOT NULL,
            updated_at   timestamptz NOT NULL DEFAULT now()
        );

        -- A booking whose resources live on several clusters: its row is on each of them
        -- (same id), each with its own reservations; reads gather them.
        ALTER TABLE booking ADD COLUMN spanning boolean NOT NULL DEFAULT false;

        -- kit/shardmap.logical_of in SQL: the id's last 16 bits modulo the shard count.
        CREATE FUNCTION logical_shard(id uuid, shards integer) RETURNS integer
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT (get_byte(uuid_send(id), 14) * 256 + get_byte(uuid_send(id), 15)) % shards
        $$;

        -- Volatile plpgsql: the ownership read below takes a snapshot after the lock is held.
        CREATE FUNCTION shard_guard(shard integer) RETURNS void LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock_shared(1936221300, shard);
            IF NOT EXISTS (SELECT 1 FROM shard_owned WHERE logical = shard) THEN
                RAISE EXCEPTION 'logical shard % is not on this cluster', shard
                    USING ERRCODE = 'RS001';
            END IF;
        END $$;

        CREATE FUNCTION fence_check(resource uuid, token bigint) RETURNS void
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            INSERT INTO resource_fence AS f (resource_id, token) VALUES (resource, token)
            ON CONFLICT (resource_id) DO UPDATE SET token = excluded.token, updated_at = now()
                WHERE f.token <= excluded.token;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'fencing token % for resource % is older than one already seen',
                    token, resource USING ERRCODE = 'RS002';
            END IF;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE booking DROP COLUMN spanning;
        DROP FUNCTION fence_check(uuid, bigint), shard_guard(integer),
            logical_shard(uuid, integer);
        DROP TABLE resource_fence, shard_owned, twophase_decision, shard_map;
        """
    )
