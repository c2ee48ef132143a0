"""Round-robin pools keep their turn in the database.

- `pool_turn`: per tenant and pool (a hash of the pool's definition: its tags, resource ids
  and minimum capacity, reservations/pool_model.py `pool_key`), a counter that every
  round-robin create from the pool moves on by one (an upsert in its own short transaction,
  on the catalog). The candidate the counter points at is tried first, so bookings spread
  evenly over the pool's resources, across restarts and API instances.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pool_turn (
            tenant_id   uuid NOT NULL REFERENCES tenant (id),
            pool_key    text NOT NULL,
            turn        bigint NOT NULL,
            updated_at  timestamptz NOT NULL,
            PRIMARY KEY (tenant_id, pool_key)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE pool_turn")
