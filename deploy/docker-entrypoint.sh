#!/bin/sh
# The production image has no embedded PostgreSQL or Valkey (see deploy/Dockerfile): refuse to
# start without the servers' addresses instead of failing later with an import error.
set -eu

: "${DATABASE_URL:?DATABASE_URL is required: this image has no embedded PostgreSQL}"
if [ "${1:-}" = "reservations" ] && [ "${2:-}" = "serve" ]; then
  : "${REDIS_URL:?REDIS_URL is required (a redis:// URL, or none): this image has no embedded Valkey}"
fi

exec "$@"
