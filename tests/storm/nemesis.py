"""The storm's nemesis: faults injected on a schedule, one at a time, each healed before the
next, and a watchdog that restarts an API process that died by itself (the crash-after-commit
fault, kit/faults.py).

- pg-restart: PostgreSQL stopped with `-m immediate` (no checkpoint, every backend gone at
  once) and started again: crash recovery from the WAL.
- valkey-kill: Valkey SIGKILLed and started again, empty.
- api-kill / api-pause: an API process SIGKILLed and restarted, or SIGSTOPped for a few
  seconds (its requests time out mid-transaction; its locks are held meanwhile).
- replica-restart: the streaming replica stopped immediately (SIGQUIT) and started again on
  its files (crash recovery, then streaming from where it was).
- replica-pause: the replica SIGSTOPped for a few seconds: it falls behind and its
  connections hang (a frozen host), then SIGCONT and it catches up.
- pgbouncer-kill: PgBouncer SIGKILLed (every client and server connection cut, transactions
  in flight lost or committed with the answer lost) and started again on the same port.
- pgbouncer-pause: PgBouncer SIGSTOPped for a few seconds (nothing answers), then SIGCONT.
"""

from __future__ import annotations

import random
import threading
import time
from typing import TYPE_CHECKING

from tests.storm.cluster import ApiProcess, Cluster

if TYPE_CHECKING:
    from tests.storm.workload import Storm

BASE_FAULTS = ("pg-restart", "valkey-kill", "api-kill", "api-pause")
REPLICA_FAULTS = ("replica-restart", "replica-pause")
PGBOUNCER_FAULTS = ("pgbouncer-kill", "pgbouncer-pause")
FAULT_KINDS = BASE_FAULTS + REPLICA_FAULTS + PGBOUNCER_FAULTS


class Nemesis:
    def __init__(self, storm: Storm) -> None:
        self.storm = storm
        self.cluster: Cluster = storm.cluster
        self.api_locks = {api.name: threading.Lock() for api in self.cluster.apis}

    def restart_api(self, api: ApiProcess) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                api.start()
                return
            except Exception:  # e.g. PostgreSQL not back yet: try again
                api.kill()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def run(self, faults: tuple[str, ...], first: float, every: float, seed: int) -> None:
        """Inject `faults` in turn, the first `first` seconds into the traffic, then one
        `every` seconds after the previous one healed, until the storm stops."""
        if not faults:
            return
        rng = random.Random(seed)
        rec, stopping = self.storm.rec, self.storm.stopping
        due = first
        n = 0
        while not stopping.is_set():
            if rec.now() < due:
                time.sleep(0.05)
                continue
            kind = faults[n % len(faults)]
            n += 1
            self.inject(kind, rng)
            due = rec.now() + every

    def inject(self, kind: str, rng: random.Random) -> None:
        c, rec, cluster = self.storm.config, self.storm.rec, self.cluster
        if kind == "pg-restart":
            window = rec.fault(kind, "postgres")
            cluster.postgres.crash()
            time.sleep(c.pg_down_seconds)
            cluster.postgres.start()
        elif kind == "valkey-kill":
            window = rec.fault(kind, "valkey")
            cluster.valkey.kill()
            time.sleep(1.0)
            cluster.valkey.start()
        elif kind in ("api-kill", "api-pause"):
            api = rng.choice(cluster.apis)
            with self.api_locks[api.name]:
                window = rec.fault(kind, api.name)
                if kind == "api-kill":
                    api.kill()
                    time.sleep(0.5)
                    self.restart_api(api)
                else:
                    api.pause()
                    time.sleep(c.pause_seconds)
                    api.resume()
        elif kind in REPLICA_FAULTS:
            replica = cluster.replica
            if replica is None:
                raise ValueError(f"{kind}: the cluster has no replica")
            window = rec.fault(kind, "replica")
            if kind == "replica-restart":
                replica.crash()
                time.sleep(c.pg_down_seconds)
                replica.start()
            else:
                replica.pause()
                time.sleep(c.pause_seconds)
                replica.resume()
        elif kind in PGBOUNCER_FAULTS:
            bouncer = cluster.pgbouncer
            if bouncer is None:
                raise ValueError(f"{kind}: the cluster has no PgBouncer")
            window = rec.fault(kind, "pgbouncer")
            if kind == "pgbouncer-kill":
                bouncer.kill()
                time.sleep(0.5)
                bouncer.restart()
            else:
                bouncer.pause()
                time.sleep(c.pause_seconds)
                bouncer.resume()
        else:
            raise ValueError(f"unknown fault {kind}")
        window.healed = rec.now()

    def watchdog(self, stopping: threading.Event) -> None:
        """Restart an API process that died without the nemesis (crash-after-commit)."""
        rec = self.storm.rec
        while not stopping.is_set():
            for api in self.cluster.apis:
                lock = self.api_locks[api.name]
                if not lock.acquire(blocking=False):
                    continue
                try:
                    if api.process is not None and not api.alive():
                        window = rec.fault("crash-after-commit", api.name)
                        window.started = max(0.0, window.started - 0.25)
                        self.restart_api(api)
                        window.healed = rec.now()
                finally:
                    lock.release()
            time.sleep(0.1)

    def heal(self) -> None:
        """Everything up again: PostgreSQL's companions, Valkey, every API process running."""
        cluster = self.cluster
        if cluster.pgbouncer is not None:
            cluster.pgbouncer.resume()
            if not cluster.pgbouncer.running():
                cluster.pgbouncer.restart()
        if cluster.replica is not None:
            cluster.replica.resume()
            if not cluster.replica.running():
                cluster.replica.start()
        for api in cluster.apis:
            with self.api_locks[api.name]:
                api.resume()
                if not api.alive():
                    self.restart_api(api)
        if cluster.valkey.process is None or cluster.valkey.process.poll() is not None:
            cluster.valkey.start()
