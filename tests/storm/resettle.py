"""Settle, after the fact, the unknown outcomes a kept storm left unsettled, then check again.

The kept directory holds the database and the history, not the booker keys' secrets (only
their hashes are stored). Idempotency is scoped to the key's id, so each booker key gets a
new secret under the same id and prefix (written straight into `api_key`: the one thing done
behind the API's back, and it touches no reservation); then PostgreSQL, a fresh Valkey and one
API process start again and every operation still `info` is retried exactly as the storm
would have (same Idempotency-Key and body, same If-Match)."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import psycopg

from reservations.tenancy import keys
from tests.storm.checker import check, read_snapshot
from tests.storm.cluster import ApiProcess, Cluster, PrivatePostgres, PrivateValkey
from tests.storm.history import INFO
from tests.storm.run import StormResult, figures
from tests.storm.workload import Setup, Storm


def reissue_booker_tokens(database_url: str) -> list[str]:
    """New secrets for the storm's booker keys, in the order they were made (the order of
    the clients' tokens)."""
    tokens = []
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, prefix FROM api_key WHERE role = 'booker' ORDER BY created_at, id"
        ).fetchall()
        for key_id, prefix in rows:
            secret = "".join(secrets.choice(keys._ALPHABET) for _ in range(32))
            conn.execute(
                "UPDATE api_key SET secret_hash = %s WHERE id = %s",
                (keys.hash_secret(secret), key_id),
            )
            tokens.append(f"rsv_{prefix}_{secret}{keys._checksum(prefix, secret)}")
    return tokens


def resettle(workdir: Path) -> StormResult:
    kept = StormResult.load(workdir / "history.jsonl")
    t0_wall = kept.estimated_t0_wall()
    postgres = PrivatePostgres.reopen(workdir / "pg")
    postgres.start()
    valkey = PrivateValkey(workdir / "valkey-resettle")
    api: ApiProcess | None = None
    try:
        database_url = postgres.url("storm")
        tokens = reissue_booker_tokens(database_url)
        valkey.start()
        api = ApiProcess(
            name="api0",
            env={
                "DATABASE_URL": database_url,
                "REDIS_URL": valkey.url,
                "RESERVATIONS_REDIS_KEY_PREFIX": "storm:",
                "RESERVATIONS_RUN_WORKER": "true",
            },
            logfile=workdir / "api-resettle.log",
        )
        api.start()
        cluster = Cluster(workdir, postgres, valkey, [api], database_url)
        storm = Storm(
            cluster, Setup(admin_token="", tokens=tokens, unit=[], pooled=[]), kept.config
        )
        storm.rec.history = kept.history
        storm.rec.t0 = time.monotonic() - (time.time() - t0_wall)  # the run's time axis
        before = sum(op.final == INFO for op in kept.history)
        asyncio.run(storm.settle_all())
        kept.verdict = check(kept.history, read_snapshot(database_url), t0_wall)
    finally:
        if api is not None:
            api.stop()
        valkey.kill()
        postgres.stop()
    old = kept.figures
    kept.figures = figures(kept.history, kept.faults, kept.verdict)
    kept.figures["seconds"] = old.get("seconds", {})
    kept.figures["command"] = old.get("command", "")
    kept.figures["resettled"] = before
    kept.t0_wall = t0_wall
    kept.dump(workdir / "history.jsonl")
    return kept
