"""Helpers the tests share; conftest.py files hold only fixtures and hooks, and test modules
never import each other or a conftest, only these.

- api.py: Api (a client bound to one key), Tenant and new_tenant (a key per role), the answer
  readers _created and _problem, _db (SQL against the app's database), sse_frames.
- servers.py: PgServer, RedisServer, THROUGH_PGBOUNCER, make_settings,
  wait_for_earlier_transactions.
- live.py: the app in a uvicorn process (start_live_server, stop_live_server, LiveServer),
  free_port, admin_key_on and admin_token (keys made in the database), metric (Prometheus).
- race.py: racing clients (burst, capacity_burst, _http, create_key) and the database checks
  of their outcome (overlapping_pairs, live_rows, peak_usage).
- faults.py: PrivateRedis (a Redis of a test's own to kill), assert_database_consistent.
- webhooks.py: Receiver, a real webhook receiver on loopback.
- sharding.py: Topology (three clusters, a catalog, Redlock nodes), LOGICAL, rows_on.
- routes.py: every route that takes an id (the isolation and OWASP matrices).
- browser.py: Debian's Chromium for tests/web (CHROMIUM, CHROMIUM_ARGS, MISSING).
- npm.py: node tools from npm (openapi-typescript, tsc) installed once into a shared cache.
- pgbouncer.py, replica.py: a real PgBouncer and a real streaming replica.
- policy_model.py: a minute-by-minute model of a booking policy, and its strategies.
"""
