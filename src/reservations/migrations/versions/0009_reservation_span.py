"""Each tenant's longest reservation, kept on write, so a list with a window reads only the
rows that can meet it.

A list from `from` must find reservations that started before `from` and end after it. Until
now the index range on `start_at` reached back by the longest span the schema allows (366
days), so a list of one day read and filtered out a whole year of rows. `reservation_span`
holds, per tenant, a length at least that of any reservation of the tenant in this database
(live or history); reads bound `start_at > from - longest`.

The bound only grows. A trigger widens it when a longer reservation is written; it reads the
row first and upserts (which locks the tenant's row) only when the new span is longer, so
writes of one tenant do not queue on it. Rows copied with triggers off (a shard move) widen
it explicitly (sharding/repository.widen_spans). Lengths are whole seconds as an interval
without a day part, so subtracting one from a timestamptz is exact across DST changes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE reservation_span (
            tenant_id  uuid PRIMARY KEY REFERENCES tenant (id),
            longest    interval NOT NULL CHECK (longest > interval '0')
        );

        CREATE FUNCTION span_of(start_at timestamptz, end_at timestamptz) RETURNS interval
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT make_interval(secs => ceil(extract(epoch FROM end_at - start_at)))
        $$;

        CREATE FUNCTION reservation_widen_span() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM 1 FROM reservation_span
                WHERE tenant_id = NEW.tenant_id AND longest >= span_of(NEW.start_at, NEW.end_at);
            IF NOT FOUND THEN
                INSERT INTO reservation_span AS s (tenant_id, longest)
                VALUES (NEW.tenant_id, span_of(NEW.start_at, NEW.end_at))
                ON CONFLICT (tenant_id) DO UPDATE SET longest = greatest(s.longest, excluded.longest);
            END IF;
            RETURN NULL;
        END $$;

        CREATE TRIGGER reservation_widen_span AFTER INSERT OR UPDATE OF start_at, end_at
            ON reservation FOR EACH ROW EXECUTE FUNCTION reservation_widen_span();
        CREATE TRIGGER reservation_history_widen_span AFTER INSERT
            ON reservation_history FOR EACH ROW EXECUTE FUNCTION reservation_widen_span();

        INSERT INTO reservation_span (tenant_id, longest)
            SELECT tenant_id, max(span_of(start_at, end_at)) FROM reservation_all
            GROUP BY tenant_id;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER reservation_history_widen_span ON reservation_history;
        DROP TRIGGER reservation_widen_span ON reservation;
        DROP FUNCTION reservation_widen_span(), span_of(timestamptz, timestamptz);
        DROP TABLE reservation_span;
        """
    )
