"""Fault injection for tests. Off unless its environment variable is set; never set it in
production.

`RESERVATIONS_FAULT_CRASH_AFTER_COMMIT` kills the API process (SIGKILL, no cleanup, no drain)
between the commit of a write and its response: for a mutating request (POST, PUT, PATCH,
DELETE) whose response is a 2xx, at the moment the application sends the response start. Every
service commits its unit of work before it returns the reply, so at that point the effect is
durable and the client has heard nothing: exactly the case an `Idempotency-Key` retry must
answer with the original result. Replays (`Idempotent-Replayed: true`) committed nothing and
are let through, so a retry of a write that crashed the process gets its answer.

Values: `once` (the first such response of the process; the process dies, so it is also the
last), `always` (every one), or a probability in (0, 1] (`0.01`: about one write in a hundred),
drawn per response.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

ENV_CRASH_AFTER_COMMIT = "RESERVATIONS_FAULT_CRASH_AFTER_COMMIT"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class CrashAfterCommit:
    """When to crash: each eligible response with `probability`, or only the first (`once`)."""

    probability: float
    once: bool = False

    @classmethod
    def parse(cls, value: str | None) -> CrashAfterCommit | None:
        """`None`/empty/`off`/`0`: no fault. Raises ValueError on anything else it cannot read."""
        if value is None:
            return None
        text = value.strip().lower()
        if text in ("", "off", "0", "false", "no"):
            return None
        if text == "once":
            return cls(probability=1.0, once=True)
        if text == "always":
            return cls(probability=1.0)
        try:
            probability = float(text)
        except ValueError:
            raise ValueError("must be 'once', 'always' or a probability in (0, 1]") from None
        if not 0.0 < probability <= 1.0:
            raise ValueError("must be 'once', 'always' or a probability in (0, 1]")
        return cls(probability=probability)


def kill_this_process() -> None:
    """SIGKILL ourselves: nothing after this line runs, no response leaves."""
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _replayed(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"idempotent-replayed" for k, _ in headers)


@dataclass
class _Trigger:
    fault: CrashAfterCommit
    draw: Callable[[], float]
    fired: int = field(default=0)

    def should_fire(self) -> bool:
        if self.fault.once and self.fired:
            return False
        return self.draw() < self.fault.probability


class CrashAfterCommitMiddleware:
    """Pure ASGI: watches the response start of mutating requests and kills the process
    before a 2xx, non-replayed one leaves. `kill` is replaceable so the trigger itself can be
    unit-tested without dying."""

    def __init__(
        self,
        app: ASGIApp,
        fault: CrashAfterCommit,
        kill: Callable[[], None] = kill_this_process,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.app = app
        self.kill = kill
        self._trigger = _Trigger(fault=fault, draw=draw)
        log.warning(
            "%s is set (%s): this process will kill itself after committed writes; for tests only",
            ENV_CRASH_AFTER_COMMIT,
            "once" if fault.once else f"p={fault.probability}",
        )

    @property
    def fired(self) -> int:
        return self._trigger.fired

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in MUTATING:
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if (
                message["type"] == "http.response.start"
                and 200 <= message["status"] < 300
                and not _replayed(list(message.get("headers", [])))
                and self._trigger.should_fire()
            ):
                self._trigger.fired += 1
                log.warning(
                    "fault injection: crashing after the commit of %s %s (status %s)",
                    scope.get("method"),
                    scope.get("path"),
                    message["status"],
                )
                self.kill()
            await send(message)

        await self.app(scope, receive, send_wrapper)
