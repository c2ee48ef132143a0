# PgBouncer as Debian ships it (1.18 on bookworm: no prepared-statement support in transaction
# mode, which is what the API is tested against with RESERVATIONS_DB_POOLER=transaction).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends pgbouncer \
 && rm -rf /var/lib/apt/lists/*
# The account Debian's package creates (its uid is whatever the package got).
USER postgres
EXPOSE 6432
CMD ["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"]
