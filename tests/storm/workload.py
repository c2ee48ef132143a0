"""The storm's clients and the settling of unknown outcomes.

Clients are asyncio tasks with httpx, each with a booker key of its own, spreading requests
over every API process. A client creates reservations (held or confirmed, quantity on pooled
resources) and then confirms, reschedules (PATCH with If-Match) and cancels its own; it also
makes and cancels bookings (tests/storm/bookings.py). Each reservation's (and booking's)
operations are issued one after the other by its client; after an `info` answer the client
leaves it alone (its state is unknown) until the settling phase, so the operations of each
form one sequence the checker can replay.

After some ok writes the client reads back what it wrote (GET, on any API process) with the
Consistency-Token that write's answer carried: with a replica, the API must serve it from a
replica that has replayed that far or from the primary, never older.

The faults come from the nemesis (tests/storm/nemesis.py), on threads beside the clients."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tests.storm import bookings
from tests.storm.checker import KEY_FIELD
from tests.storm.cluster import ApiProcess, Cluster
from tests.storm.history import FAIL, INFO, OK, WRITES, Attempt, FaultWindow, Op, outcome_of
from tests.storm.nemesis import FAULT_KINDS, Nemesis

__all__ = ["FAULT_KINDS", "Setup", "Storm", "StormConfig"]

DAY0 = datetime(2035, 6, 4, tzinfo=UTC)
DURATIONS = (30, 45, 60, 90, 120)  # minutes
# Creates sent without an Idempotency-Key: only those may be refused from the availability
# map in Valkey (a keyed retry must get its stored reply, so keyed creates skip the map).
KEYLESS = 0.1
BOOKING_CREATE = 0.06  # share of a client's turns that make a booking
BOOKING_CANCEL = 0.04  # ... that cancel one of its live bookings
READ_AFTER_WRITE = 0.3  # chance that an ok write is read back with its Consistency-Token
LIVE = ("held", "confirmed")


@dataclass
class StormConfig:
    clients: int = 24
    duration: float | None = 60.0  # seconds of traffic (or until `operations`)
    operations: int | None = None
    unit_resources: int = 6
    pooled_resources: int = 3
    pooled_capacity: int = 3
    days: int = 2
    seed: int = 1
    timeout: float = 4.0  # the client's per-request timeout
    first_fault: float = 6.0  # seconds into the traffic
    fault_every: float = 10.0
    faults: tuple[str, ...] = FAULT_KINDS
    pause_seconds: float = 4.0  # longer than `timeout`: some requests time out mid-transaction
    pg_down_seconds: float = 1.5
    crash_after_commit: str | None = "0.003"
    # The traffic goes on past `duration` (for at most as long again) until every kind in
    # `faults` has been injected and healed this many times.
    min_faults_each: int = 0
    # A streaming replica the API reads from, and PgBouncer (transaction mode) between the API
    # and the primary; their faults in `faults` need them.
    replica: bool = True
    pgbouncer: bool = True


@dataclass
class Setup:
    admin_token: str
    tokens: list[str]
    unit: list[str]
    pooled: list[str]

    @property
    def resources(self) -> list[str]:
        return self.unit + self.pooled


def problem_of(response: httpx.Response) -> str | None:
    if response.status_code < 400:
        return None
    try:
        return str(response.json().get("type", "")).rsplit("/", 1)[-1] or None
    except ValueError:
        return None


@dataclass
class Known:
    """A client's view of one of its reservations: the last answer it had."""

    id: str
    resource: str
    reply: dict[str, Any]
    seq: int = 0
    parked: bool = False  # an info answer: unknown state, left alone until settled

    @property
    def status(self) -> str:
        return str(self.reply["status"])

    @property
    def version(self) -> int:
        return int(self.reply["version"])


@dataclass
class Recorder:
    history: list[Op] = field(default_factory=list)
    faults: list[FaultWindow] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    t0_wall: float = field(default_factory=time.time)  # the same moment on the wall clock
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def fault(self, kind: str, target: str) -> FaultWindow:
        window = FaultWindow(kind=kind, target=target, started=self.now())
        with self.lock:
            self.faults.append(window)
        return window


class Storm:
    def __init__(self, cluster: Cluster, setup: Setup, config: StormConfig) -> None:
        self.cluster = cluster
        self.setup = setup
        self.config = config
        self.rec = Recorder()
        self.traffic_ended = 0.0
        self.stop = asyncio.Event()
        self.stopping = threading.Event()  # for the nemesis and the watchdog threads
        self.nemesis = Nemesis(self)
        self.capacity = {r: 1 for r in setup.unit} | {
            r: config.pooled_capacity for r in setup.pooled
        }

    # -- clients --------------------------------------------------------------------------

    def slot(self, rng: random.Random) -> tuple[str, str]:
        day = DAY0 + timedelta(days=rng.randrange(self.config.days))
        start = day + timedelta(hours=8, minutes=15 * rng.randrange(40))
        end = start + timedelta(minutes=rng.choice(DURATIONS))
        return start.isoformat().replace("+00:00", "Z"), end.isoformat().replace("+00:00", "Z")

    def _enough(self) -> bool:
        c = self.config
        if c.operations is not None and len(self.rec.history) >= c.operations:
            return True
        if c.duration is None or self.rec.now() < c.duration:
            return False
        return self.rec.now() >= 2 * c.duration or all(
            sum(w.kind == kind and w.healed > 0 for w in self.rec.faults) >= c.min_faults_each
            for kind in c.faults
        )

    async def client(self, i: int) -> None:
        rng = random.Random(self.config.seed * 1000 + i)
        token = self.setup.tokens[i % len(self.setup.tokens)]
        mine: dict[str, Known] = {}
        my_bookings: dict[str, bookings.KnownBooking] = {}
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=self.config.timeout,
            limits=limits,
        ) as http:
            while not self.stop.is_set():
                if self._enough():
                    self.stop.set()
                    break
                turn = rng.random()
                if turn < BOOKING_CREATE:
                    await bookings.create(self, http, i, rng, my_bookings)
                    continue
                live_bookings = [
                    b for b in my_bookings.values() if not b.parked and b.status in LIVE
                ]
                if turn < BOOKING_CREATE + BOOKING_CANCEL and live_bookings:
                    await bookings.cancel(self, http, i, rng, rng.choice(live_bookings))
                    for bid in [b for b, k in my_bookings.items() if k.status not in LIVE]:
                        if not my_bookings[bid].parked:
                            del my_bookings[bid]
                    continue
                live = [k for k in mine.values() if not k.parked and k.status in LIVE]
                roll = rng.random()
                if not live or roll < 0.45:
                    await self._create(http, i, rng, mine)
                    continue
                known = rng.choice(live)
                if known.status == "held" and roll < 0.65:
                    await self._mutate(http, i, rng, known, "confirm")
                elif roll < 0.82:
                    await self._mutate(http, i, rng, known, "reschedule")
                else:
                    await self._mutate(http, i, rng, known, "cancel")
                # Forget what is settled and dead, so the choice stays among the living.
                for rid in [r for r, k in mine.items() if k.status in ("cancelled", "expired")]:
                    if not mine[rid].parked:
                        del mine[rid]

    def api(self, rng: random.Random) -> ApiProcess:
        return rng.choice(self.cluster.apis)

    async def send(self, http: httpx.AsyncClient, op: Op, api: ApiProcess) -> None:
        """Send once and record the answer. A refused connection (the process is dead) never
        delivered the request, so the client tries the other processes, as a load balancer
        would, for up to its timeout; anything after delivery is final for this attempt."""
        headers = {"Idempotency-Key": op.key} if op.keyed else {}
        if op.if_match is not None:
            headers["If-Match"] = f'"{op.if_match}"'
        if op.kind == "read" and op.token is not None:
            headers["Consistency-Token"] = op.token
        apis = [api] + [a for a in self.cluster.apis if a is not api]
        give_up = time.monotonic() + self.config.timeout
        n = 0
        while True:
            target = apis[n % len(apis)]
            n += 1
            try:
                r = await http.request(
                    op.method, target.url + op.path, json=op.body, headers=headers
                )
            except httpx.ConnectError as exc:
                if time.monotonic() < give_up:
                    if n % len(apis) == 0:
                        await asyncio.sleep(0.2)
                    continue
                op.error = type(exc).__name__
            except httpx.HTTPError as exc:
                op.error = type(exc).__name__
            else:
                op.status, op.problem = r.status_code, problem_of(r)
                if 200 <= r.status_code < 300:
                    op.reply = r.json()
                if op.kind == "read":
                    op.source = r.headers.get("read-source")
                else:
                    op.token = r.headers.get("consistency-token")
            op.api = target.name
            break
        op.ended = self.rec.now()
        op.outcome = outcome_of(op.status, op.problem)
        op.final = op.outcome
        op.final_reply, op.final_problem = op.reply, op.problem

    def new_op(self, **fields: Any) -> Op:
        with self.rec.lock:
            op = Op(n=len(self.rec.history), started=self.rec.now(), **fields)
            self.rec.history.append(op)
        return op

    async def _create(
        self, http: httpx.AsyncClient, i: int, rng: random.Random, mine: dict[str, Known]
    ) -> None:
        resource = rng.choice(self.setup.resources)
        capacity = self.capacity[resource]
        start, end = self.slot(rng)
        key = uuid.uuid4().hex
        body: dict[str, Any] = {"resource_id": resource, "start": start, "end": end}
        if capacity > 1:
            body["quantity"] = rng.randint(1, capacity)
        elif rng.random() < 0.01:
            body["quantity"] = 2  # more than the capacity: a definite 422
        if rng.random() < 0.4:
            body["hold_seconds"] = rng.randint(2, 40)
        body["metadata"] = {KEY_FIELD: key}
        api = self.api(rng)
        op = self.new_op(
            client=i,
            kind="create",
            key=key,
            method="POST",
            path="/v1/reservations",
            body=body,
            if_match=None,
            reservation=None,
            resource=resource,
            seq=0,
            api=api.name,
            keyed=rng.random() >= KEYLESS,
        )
        await self.send(http, op, api)
        if op.outcome == OK and op.reply is not None:
            op.reservation = op.reply["id"]
            mine[op.reservation] = Known(id=op.reservation, resource=resource, reply=op.reply)
            await self.maybe_read(http, i, rng, op)

    async def _mutate(
        self, http: httpx.AsyncClient, i: int, rng: random.Random, known: Known, kind: str
    ) -> None:
        body: dict[str, Any] | None = None
        if kind == "reschedule":
            start, end = self.slot(rng)
            method, path, body = (
                "PATCH",
                f"/v1/reservations/{known.id}",
                {"start": start, "end": end},
            )
            if_match: int | None = known.version
        else:
            method, path = "POST", f"/v1/reservations/{known.id}/{kind}"
            if_match = known.version if rng.random() < 0.5 else None
        known.seq += 1
        api = self.api(rng)
        op = self.new_op(
            client=i,
            kind=kind,
            key=uuid.uuid4().hex,
            method=method,
            path=path,
            body=body,
            if_match=if_match,
            reservation=known.id,
            resource=known.resource,
            seq=known.seq,
            api=api.name,
        )
        await self.send(http, op, api)
        if op.outcome == OK and op.reply is not None:
            known.reply = op.reply
            await self.maybe_read(http, i, rng, op)
        elif op.outcome == INFO:
            known.parked = True
        elif op.status == 412 or op.problem in ("hold-expired", "reservation-not-live"):
            # The sweeper expired the hold (a new version): read it again (not an operation).
            try:
                r = await http.get(api.url + f"/v1/reservations/{known.id}")
            except httpx.HTTPError:
                known.parked = True
                return
            if r.status_code == 200:
                known.reply = r.json()
            else:
                known.parked = True

    async def maybe_read(
        self, http: httpx.AsyncClient, i: int, rng: random.Random, write: Op
    ) -> None:
        """Sometimes, read back what an ok write answered, on any API process, with the
        Consistency-Token that answer carried (none without a replica). Not a write: never
        retried, never settled; the checker compares it with the write's answer."""
        if rng.random() >= READ_AFTER_WRITE:
            return
        if write.booking is not None:
            path = f"/v1/bookings/{write.booking}"
        else:
            path = f"/v1/reservations/{write.reservation}"
        api = self.api(rng)
        op = self.new_op(
            client=i,
            kind="read",
            key="",
            method="GET",
            path=path,
            body=None,
            if_match=None,
            reservation=write.reservation,
            resource=write.resource,
            seq=write.seq,
            api=api.name,
            keyed=False,
            booking=write.booking,
            token=write.token,
            follows=write.n,
        )
        await self.send(http, op, api)

    # -- faults (tests/storm/nemesis.py) ----------------------------------------------------

    def inject(self, kind: str, rng: random.Random) -> None:
        self.nemesis.inject(kind, rng)

    def heal(self) -> None:
        """Everything up again: PgBouncer, the replica, Valkey, every API process running."""
        self.nemesis.heal()

    # -- settling -------------------------------------------------------------------------

    def quiesce(self, timeout: float = 30.0) -> None:
        """Wait until no client backend of the storm's database is running a statement or
        sits in a transaction: nothing that was in flight can still commit."""
        deadline = time.monotonic() + timeout
        time.sleep(0.5)
        with psycopg.connect(self.cluster.database_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                    " AND (state = 'active' OR state LIKE 'idle in transaction%')"
                ).fetchone()
                if row is not None and row[0] == 0:
                    return
                time.sleep(0.1)

    async def settle(self, op: Op, http: httpx.AsyncClient, deadline: float) -> None:
        """Retry an info operation with its key (and If-Match) until the answer is definite."""
        if not op.keyed:
            await self._settle_by_reading(op, http, deadline)
            return
        healthy = [
            a for a in self.cluster.apis if "RESERVATIONS_FAULT_CRASH_AFTER_COMMIT" not in a.env
        ]
        rng = random.Random(op.n)
        headers = {"Idempotency-Key": op.key}
        if op.if_match is not None:
            headers["If-Match"] = f'"{op.if_match}"'
        while time.monotonic() < deadline:
            api = rng.choice(healthy or self.cluster.apis)
            attempt = Attempt(at=self.rec.now(), status=None)
            op.attempts.append(attempt)
            try:
                r = await http.request(op.method, api.url + op.path, json=op.body, headers=headers)
            except httpx.HTTPError as exc:
                attempt.error = type(exc).__name__
                await asyncio.sleep(0.5)
                continue
            attempt.status, attempt.problem = r.status_code, problem_of(r)
            attempt.replayed = r.headers.get("idempotent-replayed") == "true"
            outcome = outcome_of(r.status_code, attempt.problem)
            if outcome == INFO:
                await asyncio.sleep(0.5)
                continue
            if op.kind == "reschedule" and r.status_code == 412:
                await self._settle_reschedule(op, http, api)
                return
            op.final = outcome
            op.final_problem = attempt.problem
            if outcome == OK:
                op.final_reply = r.json()
                if op.kind == "create":
                    op.reservation = op.final_reply["id"]
                elif op.kind == "booking-create":
                    op.booking = op.final_reply["id"]
                op.settled_as = "replayed" if attempt.replayed else "ran-on-retry"
            else:
                op.settled_as = "refused-on-retry"
            return

    async def _settle_reschedule(self, op: Op, http: httpx.AsyncClient, api: ApiProcess) -> None:
        """412 to the retried PATCH: the version moved. Only this client changes the
        reservation (and the sweeper, which only expires holds), so the read tells whether
        the lost PATCH was applied."""
        assert op.body is not None
        r = await http.get(api.url + f"/v1/reservations/{op.reservation}")
        if r.status_code != 200:
            return  # stays info; the next settle round reads again
        now = r.json()
        applied = (
            datetime.fromisoformat(now["start"]) == datetime.fromisoformat(op.body["start"])
            and datetime.fromisoformat(now["end"]) == datetime.fromisoformat(op.body["end"])
            and int(now["version"]) > (op.if_match or 0)
        )
        op.final = OK if applied else FAIL
        op.final_reply = now if applied else None
        op.final_problem = None if applied else "precondition-failed"
        op.settled_as = "reads-applied" if applied else "reads-not-applied"

    async def _settle_by_reading(self, op: Op, http: httpx.AsyncClient, deadline: float) -> None:
        """A create sent without a key: retrying could book it twice, so look for it. Its
        metadata carries the storm's mark; the client lists its reservations around the range."""
        assert op.body is not None
        start = datetime.fromisoformat(op.body["start"]) - timedelta(hours=1)
        end = datetime.fromisoformat(op.body["end"]) + timedelta(hours=1)
        params = {
            "resource_id": op.resource,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "limit": "500",
        }
        while time.monotonic() < deadline:
            api = self.cluster.apis[0]
            attempt = Attempt(at=self.rec.now(), status=None)
            op.attempts.append(attempt)
            try:
                r = await http.get(api.url + "/v1/reservations", params=params)
            except httpx.HTTPError as exc:
                attempt.error = type(exc).__name__
                await asyncio.sleep(0.5)
                continue
            attempt.status = r.status_code
            if r.status_code != 200:
                await asyncio.sleep(0.5)
                continue
            page = r.json()
            assert page["next_cursor"] is None, "more than one page around one range"
            mine = [i for i in page["items"] if i["metadata"].get(KEY_FIELD) == op.key]
            if mine:
                op.final, op.final_reply, op.settled_as = OK, mine[0], "reads-found"
                op.reservation = mine[0]["id"]
            else:
                op.final, op.final_problem, op.settled_as = FAIL, "not-found", "reads-absent"
            return

    async def settle_all(self, per_op_seconds: float = 90.0) -> None:
        """Settle every info operation, 16 at a time; each gets `per_op_seconds` from when its
        turn comes (a fixed deadline for all would leave the last ones untried)."""
        todo = [op for op in self.rec.history if op.final == INFO and op.kind in WRITES]
        limit = asyncio.Semaphore(16)
        # One client per key, shared: building an httpx client costs tens of milliseconds of
        # CPU (its TLS context), more than a settling request.
        clients = {
            token: httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10)
            for token in self.setup.tokens
        }

        async def one(op: Op) -> None:
            http = clients[self.setup.tokens[op.client % len(self.setup.tokens)]]
            async with limit:
                deadline = time.monotonic() + per_op_seconds
                for _ in range(3):  # a reschedule's read may need another round
                    await self.settle(op, http, deadline)
                    if op.final != INFO:
                        return

        try:
            await asyncio.gather(*(one(op) for op in todo))
        finally:
            for http in clients.values():
                await http.aclose()

    # -- the whole run --------------------------------------------------------------------

    async def run(self) -> None:
        c = self.config
        threads = [
            threading.Thread(
                target=self.nemesis.run,
                args=(c.faults, c.first_fault, c.fault_every, c.seed),
                name="nemesis",
                daemon=True,
            ),
            threading.Thread(
                target=self.nemesis.watchdog, args=(self.stopping,), name="watchdog", daemon=True
            ),
        ]
        self.rec.t0, self.rec.t0_wall = time.monotonic(), time.time()
        for t in threads:
            t.start()
        clients = [asyncio.create_task(self.client(i)) for i in range(self.config.clients)]
        try:
            await asyncio.gather(*clients)
        finally:
            self.stop.set()
            self.stopping.set()
            for t in threads:
                await asyncio.to_thread(t.join, 180)
        self.traffic_ended = self.rec.now()
        await asyncio.to_thread(self.heal)
        # A paused process's transactions may still commit after SIGCONT, and a killed
        # process's backends roll back when PostgreSQL notices: let that finish first.
        await asyncio.to_thread(self.quiesce)
        self.stopping.clear()
        watchdog = threading.Thread(
            target=self.nemesis.watchdog, args=(self.stopping,), name="watchdog-settle", daemon=True
        )
        watchdog.start()
        try:
            await self.settle_all()
        finally:
            self.stopping.set()
            await asyncio.to_thread(watchdog.join, 180)
