#!/bin/sh
# A streaming replica: on first start, a base backup of the primary with a replication slot and
# standby.signal/primary_conninfo written by pg_basebackup -R; afterwards, just start.
set -eu
export PGPASSWORD="$REPLICATION_PASSWORD"
until pg_isready -q -h postgres-primary -p 5432; do sleep 1; done
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pg_basebackup -h postgres-primary -p 5432 -U replicator -D "$PGDATA" \
    --wal-method=stream --write-recovery-conf --create-slot --slot=replica_1 --progress
  chmod 0700 "$PGDATA"
fi
exec postgres -c hot_standby=on -c hot_standby_feedback=on
