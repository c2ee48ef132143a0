"""Live reservations hash-partitioned by resource; ended ones moved to a monthly history.

- `reservation` becomes PARTITION BY HASH (resource_id) with 16 partitions, so each
  resource's rows, and the guards that watch them, sit in one partition. The exclusion
  constraint is declared on each partition (`reservation_pNN_no_overlap`): PostgreSQL 15
  cannot declare it on a partitioned parent (17 can), and one schema on every supported
  version keeps tests and error handling the same. The primary key becomes (id, resource_id)
  because a partitioned table's unique keys must contain the partition key.
- `reservation_history` holds reservations whose guarded range ended before the horizon in
  `history_horizon`; it is range-partitioned by month of start_at (UTC), partitions are made
  by the history job (reservations.history) ahead of time and on demand.
- The horizon is the one fact the mover and the writers share: a live row whose guarded range
  starts before it is refused (SQLSTATE 23514, constraint `reservation_history_horizon`), so
  nothing can ever need to conflict with a row that has moved to history. Writers check it
  under a shared transaction-level advisory lock that the job takes exclusively to move the
  horizon: a writer that read the old horizon commits before the horizon moves.
- `reservation_all` (a UNION ALL view, with `in_history`) is what reads use; writes use
  `reservation`.

The conversion copies the rows into the new table in this migration's transaction (writers
wait on the old table's lock meanwhile), then builds the constraints and indexes, which
re-validates the invariant on the copied rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PARTITIONS = 16
# pg_advisory_xact_lock(int, int) keys live apart from the one-bigint resource locks.
HISTORY_LOCK = "20261125, 1"

_COLUMNS = (
    "id, tenant_id, resource_id, booking_id, start_at, end_at, during, status, quantity,"
    " expires_at, customer, metadata, version, created_by, created_at, updated_at, pooled"
)

# Columns, checks and foreign keys of the live table (as 0001 and 0002 left them).
_LIVE_TABLE = """
    CREATE TABLE reservation (
        id           uuid NOT NULL,
        tenant_id    uuid NOT NULL,
        resource_id  uuid NOT NULL,
        booking_id   uuid,
        start_at     timestamptz NOT NULL,
        end_at       timestamptz NOT NULL,
        during       tstzrange NOT NULL,
        status       text NOT NULL CONSTRAINT reservation_status_check
                     CHECK (status IN ('held', 'confirmed', 'cancelled', 'expired')),
        quantity     integer NOT NULL DEFAULT 1
                     CONSTRAINT reservation_quantity_check CHECK (quantity >= 1),
        expires_at   timestamptz,
        customer     text,
        metadata     jsonb NOT NULL DEFAULT '{}',
        version      integer NOT NULL DEFAULT 1,
        created_by   uuid NOT NULL
                     CONSTRAINT reservation_created_by_fkey REFERENCES api_key (id),
        created_at   timestamptz NOT NULL,
        updated_at   timestamptz NOT NULL,
        pooled       boolean NOT NULL DEFAULT false,
        -- Named, so that converting the table back and forth keeps the names.
        CONSTRAINT reservation_resource_fkey FOREIGN KEY (tenant_id, resource_id)
            REFERENCES resource (tenant_id, id),
        CONSTRAINT reservation_booking_fkey FOREIGN KEY (tenant_id, booking_id)
            REFERENCES booking (tenant_id, id),
        CONSTRAINT reservation_positive_check CHECK (end_at > start_at),
        CONSTRAINT reservation_span_check CHECK (end_at - start_at <= interval '366 days'),
        CONSTRAINT reservation_during_check CHECK (during @> tstzrange(start_at, end_at)),
        CONSTRAINT reservation_held_expiry_check
            CHECK (status <> 'held' OR expires_at IS NOT NULL)
    )
"""

_TRIGGERS = """
    CREATE TRIGGER reservation_set_pooled BEFORE INSERT OR UPDATE ON reservation
        FOR EACH ROW EXECUTE FUNCTION reservation_set_pooled();
    CREATE CONSTRAINT TRIGGER reservation_capacity AFTER INSERT ON reservation
        DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW
        WHEN (NEW.pooled AND NEW.status IN ('held', 'confirmed'))
        EXECUTE FUNCTION reservation_check_capacity();
    CREATE CONSTRAINT TRIGGER reservation_capacity_update AFTER UPDATE ON reservation
        DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW
        WHEN (NEW.pooled AND NEW.status IN ('held', 'confirmed') AND (
            NOT OLD.pooled OR OLD.status NOT IN ('held', 'confirmed')
            OR OLD.resource_id <> NEW.resource_id OR OLD.quantity < NEW.quantity
            OR NOT OLD.during @> NEW.during))
        EXECUTE FUNCTION reservation_check_capacity();
"""

_INDEXES = """
    CREATE INDEX reservation_tenant_start ON reservation (tenant_id, start_at, id);
    CREATE INDEX reservation_resource_start ON reservation (resource_id, start_at, id);
    CREATE INDEX reservation_creator_start ON reservation (created_by, start_at, id);
    CREATE INDEX reservation_customer ON reservation (tenant_id, customer, start_at, id)
        WHERE customer IS NOT NULL;
    CREATE INDEX reservation_held_expiry ON reservation (expires_at) WHERE status = 'held';
    CREATE INDEX reservation_booking ON reservation (booking_id, start_at, id)
        WHERE booking_id IS NOT NULL;
    CREATE INDEX reservation_tenant_held ON reservation (tenant_id, expires_at)
        WHERE status = 'held';
    CREATE INDEX reservation_pooled_live ON reservation USING gist (resource_id, during)
        WHERE status IN ('held', 'confirmed') AND pooled;
"""

# 0002's function with the horizon check added where a row starts to use (or changes) units.
_SET_POOLED_WITH_HORIZON = """
    CREATE OR REPLACE FUNCTION reservation_set_pooled() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.status IN ('held', 'confirmed') AND (TG_OP = 'INSERT'
            OR OLD.status NOT IN ('held', 'confirmed') OR OLD.resource_id <> NEW.resource_id
            OR OLD.quantity <> NEW.quantity OR OLD.during IS DISTINCT FROM NEW.during) THEN
            PERFORM pg_advisory_xact_lock(resource_lock_key(NEW.resource_id));
            PERFORM pg_advisory_xact_lock_shared(HISTORY_LOCK);
            IF lower(NEW.during) < (SELECT moved_before FROM history_horizon) THEN
                RAISE EXCEPTION 'reservations before % are history; % starts earlier',
                    (SELECT moved_before FROM history_horizon), lower(NEW.during)
                    USING ERRCODE = 'check_violation',
                          CONSTRAINT = 'reservation_history_horizon';
            END IF;
        END IF;
        SELECT capacity > 1 INTO NEW.pooled FROM resource WHERE id = NEW.resource_id;
        IF NOT NEW.pooled AND NEW.quantity > 1 AND NEW.status IN ('held', 'confirmed') THEN
            RAISE EXCEPTION 'resource % has capacity 1; quantity % is too much',
                NEW.resource_id, NEW.quantity
                USING ERRCODE = 'exclusion_violation', CONSTRAINT = 'reservation_capacity';
        END IF;
        RETURN NEW;
    END $$;
""".replace("HISTORY_LOCK", HISTORY_LOCK)

_SET_POOLED_0002 = """
    CREATE OR REPLACE FUNCTION reservation_set_pooled() RETURNS trigger LANGUAGE plpgsql AS $$
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
"""


def upgrade() -> None:
    partitions = "\n".join(
        f"CREATE TABLE reservation_p{n:02d} PARTITION OF reservation"
        f" FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {n});"
        for n in range(PARTITIONS)
    )
    guards = "\n".join(
        f"ALTER TABLE reservation_p{n:02d} ADD CONSTRAINT reservation_p{n:02d}_no_overlap"
        " EXCLUDE USING gist (resource_id WITH =, during WITH &&)"
        " WHERE (status IN ('held', 'confirmed') AND NOT pooled)"
        " DEFERRABLE INITIALLY IMMEDIATE;"
        for n in range(PARTITIONS)
    )
    op.execute(
        f"""
        LOCK TABLE reservation IN ACCESS EXCLUSIVE MODE;
        ALTER TABLE reservation RENAME TO reservation_unpartitioned;
        {_LIVE_TABLE} PARTITION BY HASH (resource_id);
        {partitions}
        INSERT INTO reservation ({_COLUMNS}) SELECT {_COLUMNS} FROM reservation_unpartitioned;
        DROP TABLE reservation_unpartitioned;

        ALTER TABLE reservation ADD PRIMARY KEY (id, resource_id);
        {guards}
        {_INDEXES}
        -- The history job's candidates: rows whose guarded range ended before the horizon.
        CREATE INDEX reservation_guarded_end ON reservation (upper(during));
        {_TRIGGERS}

        -- One row; NULL until the history job first moves the horizon.
        CREATE TABLE history_horizon (
            single        boolean PRIMARY KEY DEFAULT true CHECK (single),
            moved_before  timestamptz
        );
        INSERT INTO history_horizon (moved_before) VALUES (NULL);

        CREATE TABLE reservation_history (
            id           uuid NOT NULL,
            tenant_id    uuid NOT NULL,
            resource_id  uuid NOT NULL,
            booking_id   uuid,
            start_at     timestamptz NOT NULL,
            end_at       timestamptz NOT NULL,
            during       tstzrange NOT NULL,
            status       text NOT NULL,
            quantity     integer NOT NULL,
            expires_at   timestamptz,
            customer     text,
            metadata     jsonb NOT NULL,
            version      integer NOT NULL,
            created_by   uuid NOT NULL,
            created_at   timestamptz NOT NULL,
            updated_at   timestamptz NOT NULL,
            pooled       boolean NOT NULL,
            moved_at     timestamptz NOT NULL,
            PRIMARY KEY (id, start_at)
        ) PARTITION BY RANGE (start_at);
        CREATE INDEX reservation_history_tenant_start
            ON reservation_history (tenant_id, start_at, id);
        CREATE INDEX reservation_history_resource_start
            ON reservation_history (resource_id, start_at, id);
        CREATE INDEX reservation_history_booking ON reservation_history (booking_id)
            WHERE booking_id IS NOT NULL;

        CREATE VIEW reservation_all AS
            SELECT {_COLUMNS}, false AS in_history FROM reservation
            UNION ALL
            SELECT {_COLUMNS}, true AS in_history FROM reservation_history;
        """
    )
    op.execute(_SET_POOLED_WITH_HORIZON)


def downgrade() -> None:
    op.execute(
        f"""
        LOCK TABLE reservation, reservation_history IN ACCESS EXCLUSIVE MODE;
        DROP VIEW reservation_all;
        ALTER TABLE reservation RENAME TO reservation_partitioned;
        {_LIVE_TABLE};
        ALTER TABLE reservation ADD PRIMARY KEY (id);
        INSERT INTO reservation ({_COLUMNS})
            SELECT {_COLUMNS} FROM reservation_partitioned
            UNION ALL SELECT {_COLUMNS} FROM reservation_history;
        DROP TABLE reservation_partitioned, reservation_history, history_horizon;
        ALTER TABLE reservation ADD CONSTRAINT reservation_no_overlap EXCLUDE USING gist
            (resource_id WITH =, during WITH &&)
            WHERE (status IN ('held', 'confirmed') AND NOT pooled)
            DEFERRABLE INITIALLY IMMEDIATE;
        {_INDEXES}
        {_TRIGGERS}
        """
    )
    op.execute(_SET_POOLED_0002)
