"""A Jepsen-style storm: concurrent clients book, confirm, reschedule and cancel through real
API processes while PostgreSQL, Valkey and the API processes are crashed, killed and paused;
afterwards every unknown outcome is settled through its Idempotency-Key and a checker reads
the database directly. `python -m tests.storm --help` runs a long one and writes
RELIABILITY.md; tests/storm/test_storm.py runs a short one in CI."""
