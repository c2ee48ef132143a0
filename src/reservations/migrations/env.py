"""Alembic environment: hand-written SQL migrations, one transaction, serialized by a lock."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

# Any fixed number works: it only keeps two processes from migrating at the same time.
MIGRATION_LOCK = 0x5245_5345_5256_0001

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set by reservations.kit.migrate"

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=False)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        context.run_migrations()
engine.dispose()
