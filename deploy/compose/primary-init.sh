#!/bin/sh
# Runs once, on the primary's first start (official postgres image, /docker-entrypoint-initdb.d):
# a role for streaming replication and a pg_hba line that lets the replica use it.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '${REPLICATION_PASSWORD}';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
