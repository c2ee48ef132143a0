"""One storm from start to verdict: servers, tenant, traffic with faults, settling, checking,
figures."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import secrets
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from reservations.config import Settings
from reservations.kit.db import Database
from reservations.tenancy import service as tenancy
from tests.storm.checker import Verdict, check, read_snapshot
from tests.storm.cluster import Cluster
from tests.storm.history import INFO, WRITES, FaultWindow, Op
from tests.storm.nemesis import PGBOUNCER_FAULTS, REPLICA_FAULTS
from tests.storm.workload import Setup, Storm, StormConfig

# A 5xx within this long after a fault healed still belongs to it (pools reconnecting).
GRACE_SECONDS = 5.0
BUFFERS = {"buffer_before": "PT10M", "buffer_after": "PT5M"}


async def _keys(database_url: str, clients: int) -> tuple[str, list[str]]:
    db = Database(database_url, Settings(database_url=database_url, db_pool_min=1))
    await db.open()
    try:
        tenant = f"storm-{secrets.token_hex(3)}"
        admin = await tenancy.create_key(db, tenant=tenant, role=tenancy.Role.admin)
        bookers = [
            (await tenancy.create_key(db, tenant=tenant, role=tenancy.Role.booker)).token
            for _ in range(clients)
        ]
        return admin.token, bookers
    finally:
        await db.close()


def make_setup(base_url: str, database_url: str, config: StormConfig) -> Setup:
    """A tenant with an admin key, a booker key per client, and the storm's resources: unit
    and pooled ones, some with turnover buffers (so `during` is wider than the booking)."""
    admin, bookers = asyncio.run(_keys(database_url, config.clients))
    auth = {"Authorization": f"Bearer {admin}"}
    unit, pooled = [], []
    with httpx.Client(base_url=base_url, headers=auth, timeout=30) as http:
        for i in range(config.unit_resources):
            body: dict[str, Any] = {"name": f"unit {i}"}
            if i % 2:
                body["policy"] = BUFFERS
            r = http.post("/v1/resources", json=body)
            r.raise_for_status()
            unit.append(r.json()["id"])
        for i in range(config.pooled_resources):
            body = {"name": f"pool {i}", "capacity": config.pooled_capacity}
            if i % 2:
                body["policy"] = BUFFERS
            r = http.post("/v1/resources", json=body)
            r.raise_for_status()
            pooled.append(r.json()["id"])
    return Setup(admin_token=admin, tokens=bookers, unit=unit, pooled=pooled)


@dataclass
class StormResult:
    config: StormConfig
    history: list[Op]
    faults: list[FaultWindow]
    verdict: Verdict
    figures: dict[str, Any]
    machine: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)
    t0_wall: float | None = None  # the history's zero on the wall clock

    def dump(self, path: Path) -> None:
        """The history, one JSON object a line, then the faults, the figures, the setup."""
        with path.open("w") as out:
            for op in self.history:
                out.write(json.dumps({"op": op.to_json()}) + "\n")
            for w in self.faults:
                out.write(json.dumps({"fault": w.to_json()}) + "\n")
            out.write(json.dumps({"figures": self.figures}) + "\n")
            config = {**asdict(self.config), "faults": list(self.config.faults)}
            out.write(
                json.dumps({"config": config, "machine": self.machine, "t0_wall": self.t0_wall})
                + "\n"
            )

    @classmethod
    def load(cls, path: Path) -> StormResult:
        """A dumped run, to render again; the verdict is recomputed from the figures only."""
        history: list[Op] = []
        faults: list[FaultWindow] = []
        figures: dict[str, Any] = {}
        config, machine, t0_wall = StormConfig(), {}, None
        for line in path.read_text().splitlines():
            item = json.loads(line)
            if "op" in item:
                history.append(Op.from_json(item["op"]))
            elif "fault" in item:
                faults.append(FaultWindow(**item["fault"]))
            elif "figures" in item:
                figures = item["figures"]
            elif "config" in item:
                config = StormConfig(
                    **{**item["config"], "faults": tuple(item["config"]["faults"])}
                )
                machine, t0_wall = item["machine"], item.get("t0_wall")
        verdict = Verdict()  # the figures carry the checker's counts
        return cls(config, history, faults, verdict, figures, machine, t0_wall=t0_wall)

    def estimated_t0_wall(self) -> float:
        """The history's zero on the wall clock, bounded from the server's `created_at` of
        each ok create (made after the request was sent): the earliest such bound, which is
        never before the true zero, so hold expiries are never taken as later than they are."""
        if self.t0_wall is not None:
            return self.t0_wall
        bounds = [
            datetime.fromisoformat(op.reply["created_at"]).timestamp() - op.started
            for op in self.history
            if op.kind == "create" and op.reply is not None and "created_at" in op.reply
        ]
        return min(bounds)

    def recheck(self, database_url: str) -> None:
        """Run the checker again over this history and the database (a kept run's)."""
        self.verdict = check(self.history, read_snapshot(database_url), self.estimated_t0_wall())
        self.figures["checker"] = self.verdict.summary()
        self.figures["violations"] = self.verdict.violations


def _in_window(start: float, end: float, windows: list[FaultWindow]) -> bool:
    return any(w.started - 0.5 <= end and start <= w.healed + GRACE_SECONDS for w in windows)


def figures(history: list[Op], faults: list[FaultWindow], verdict: Verdict) -> dict[str, Any]:
    per_kind = Counter(f"{op.kind} {op.outcome}" for op in history)
    statuses = Counter(str(op.status) if op.status else op.error or "none" for op in history)
    fault_kinds = Counter(w.kind for w in faults)
    info = [op for op in history if op.outcome == INFO and op.kind in WRITES]
    reads = [op for op in history if op.kind == "read"]
    settled = Counter(f"{op.kind} {op.settled_as or 'unsettled'}" for op in info)
    five = [
        (op.started, op.ended, op.status, op) for op in history if op.status and op.status >= 500
    ]
    for op in info:
        for a in op.attempts:
            if a.status and a.status >= 500:
                five.append((a.at, a.at, a.status, op))
    outside = [
        f"#{op.n} {op.kind} {status} at {s:.2f}s on {op.api}"
        for s, e, status, op in five
        if not _in_window(s, e, faults)
    ]
    return {
        "operations": len(history),
        "per_kind": dict(sorted(per_kind.items())),
        "statuses": dict(sorted(statuses.items())),
        "faults": dict(sorted(fault_kinds.items())),
        "info": len(info),
        "reads": {
            "sent": len(reads),
            "with_token": sum(op.token is not None for op in reads),
            "by_replica": sum(op.source == "replica" for op in reads),
            "by_primary": sum(op.source == "primary" for op in reads),
            "unanswered": sum(op.outcome == INFO for op in reads),
        },
        "info_settled": dict(sorted(settled.items())),
        "settle_attempts": sum(len(op.attempts) for op in info),
        "5xx": len(five),
        "500": sum(status == 500 for _, _, status, _ in five),
        "5xx_outside_faults": len(outside),
        "5xx_outside_detail": outside[:20],
        "checker": verdict.summary(),
        "violations": verdict.violations,
    }


def _pgbouncer_version() -> str:
    from tests.support.pgbouncer import BINARY

    if BINARY is None:
        return "none"
    out = subprocess.run([BINARY, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.split("\n")[0].removeprefix("PgBouncer ").strip() or "?"


def machine(cluster: Cluster) -> dict[str, str]:
    return {
        "nproc": str(os.cpu_count()),
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "postgres": cluster.postgres.version(),
        "valkey": cluster.valkey.version(),
        "pgbouncer": _pgbouncer_version() if cluster.pgbouncer else "none",
        "replica": "streaming replica" if cluster.replica else "none",
        "python": platform.python_version(),
        "os": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_storm(config: StormConfig, workdir: Path) -> StormResult:
    if not config.replica and (wrong := set(config.faults) & set(REPLICA_FAULTS)):
        raise ValueError(f"faults {sorted(wrong)} need the replica (StormConfig.replica)")
    if not config.pgbouncer and (wrong := set(config.faults) & set(PGBOUNCER_FAULTS)):
        raise ValueError(f"faults {sorted(wrong)} need PgBouncer (StormConfig.pgbouncer)")
    t = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # PostgreSQL runs as another user under it
    cluster = Cluster.start(
        workdir,
        apis=2,
        crash_after_commit=config.crash_after_commit,
        replica=config.replica,
        pgbouncer=config.pgbouncer,
    )
    seconds = {"startup": time.monotonic() - t}
    try:
        setup = make_setup(cluster.apis[0].url, cluster.database_url, config)
        storm = Storm(cluster, setup, config)
        t = time.monotonic()
        asyncio.run(storm.run())
        seconds["traffic"] = storm.traffic_ended
        seconds["settle"] = time.monotonic() - t - storm.traffic_ended
        t = time.monotonic()
        snapshot = read_snapshot(cluster.database_url)
        verdict = check(storm.rec.history, snapshot, storm.rec.t0_wall)
        seconds["check"] = time.monotonic() - t
        result = StormResult(
            config=config,
            history=storm.rec.history,
            faults=storm.rec.faults,
            verdict=verdict,
            figures=figures(storm.rec.history, storm.rec.faults, verdict),
            machine=machine(cluster),
            seconds=seconds,
            t0_wall=storm.rec.t0_wall,
        )
        result.figures["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
        return result
    finally:
        cluster.stop()
