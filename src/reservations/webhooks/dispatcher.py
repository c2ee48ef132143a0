"""The webhook worker: fan out new events, claim due messages, POST them signed, record
each attempt, retry with backoff, give up, and disable endpoints that keep failing.

Any number of workers run this side by side. A claim is a committed lease (`locked_until`)
taken with FOR UPDATE SKIP LOCKED, so two workers never send the same message at once; a
worker that dies mid-send loses its lease when it ends, and the message is sent again with
the same `webhook-id` (at least once on the wire: receivers dedupe by it). A message is
only claimable while no earlier message of its (endpoint, resource) queue is pending, so a
resource's events arrive in `resource_seq` order (a dead message no longer holds the rest).

Retry schedule: after the n-th failed attempt the next one waits a random time in
[0, min(max, base * 2^(n-1))] (full jitter; defaults 5 s doubling to a 1 h cap). A message
still failing `webhooks_give_up_after_seconds` (24 h) after its first attempt is dead. An
endpoint whose every attempt has failed for `webhooks_disable_after_seconds` (5 days) and
at least `webhooks_disable_after_failures` (10) times in a row is disabled, with the reason.
Only 2xx counts as delivered; redirects are not followed (a 3xx is a failure)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import httpx

from reservations import __version__
from reservations.config import Settings
from reservations.context import Context
from reservations.kit.db import Conn
from reservations.kit.ids import uuid7
from reservations.webhooks import addresses, copies, messages, queue, repository, signing
from reservations.webhooks.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_ENDPOINTS_DISABLED
from reservations.webhooks.queue import ClaimedRow

log = logging.getLogger(__name__)

ERROR_MAX_CHARS = 500
PURGE_EVERY_SECONDS = 3600.0
PURGE_BATCH = 1000
STOP_GRACE_SECONDS = 2.0


@dataclass
class Result:
    status_code: int | None
    latency_ms: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds to wait after the `attempt`-th failure: full jitter over the exponential."""
    ceiling = min(
        settings.webhooks_backoff_max_seconds,
        settings.webhooks_backoff_base_seconds * 2 ** min(attempt - 1, 62),
    )
    return random.uniform(0, ceiling)  # noqa: S311 (jitter, not a secret)


def lease_seconds(settings: Settings) -> float:
    """Long enough for a DNS lookup, the request's own timeout and recording the result."""
    return addresses.RESOLVE_TIMEOUT_SECONDS + settings.webhooks_timeout_seconds + 30.0


def new_client(settings: Settings) -> httpx.AsyncClient:
    # No connection reuse: each delivery connects to the address it has just checked (a
    # pooled connection to an IP could carry another host's TLS session). No proxies from
    # the environment, no redirects.
    return httpx.AsyncClient(
        timeout=settings.webhooks_timeout_seconds,
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"User-Agent": f"reservations-webhooks/{__version__}"},
    )


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:ERROR_MAX_CHARS]


async def send(client: httpx.AsyncClient, settings: Settings, row: ClaimedRow) -> Result:
    """One attempt: check where the URL points now, connect to that address, POST."""
    started = time.monotonic()
    try:
        target = addresses.parse(row.url, allow_private=settings.webhooks_allow_private)
        url, extensions, host = row.url, {}, {}
        if not settings.webhooks_allow_private:
            address = (await addresses.public_addresses(target))[0]
            url = target.url_for(address)
            host = {"Host": target.host_header}
            if target.scheme == "https":
                extensions = {"sni_hostname": target.host}
        body = messages.body(row)
        headers = {
            **host,
            "Content-Type": "application/json",
            **signing.headers(
                row.secret,
                msg_id=messages.message_id(row.id),
                timestamp=int(time.time()),
                body=body,
            ),
        }
        async with asyncio.timeout(settings.webhooks_timeout_seconds):
            request = client.build_request(
                "POST", url, content=body, headers=headers, extensions=extensions
            )
            response = await client.send(request, stream=True)
            await response.aclose()  # the body is not needed
        latency = int((time.monotonic() - started) * 1000)
        error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        return Result(status_code=response.status_code, latency_ms=latency, error=error)
    except (ValueError, addresses.AddressRefused) as exc:
        return Result(status_code=None, latency_ms=None, error=f"refused: {exc}"[:ERROR_MAX_CHARS])
    except TimeoutError:
        latency = int((time.monotonic() - started) * 1000)
        return Result(
            status_code=None,
            latency_ms=latency,
            error=f"timed out after {settings.webhooks_timeout_seconds:g} s",
        )
    except httpx.HTTPError as exc:
        latency = int((time.monotonic() - started) * 1000)
        return Result(status_code=None, latency_ms=latency, error=_short(exc))
    except Exception as exc:  # anything a hostile receiver provokes is its failure, not ours
        log.warning("webhook send to %s raised", row.url, exc_info=True)
        return Result(status_code=None, latency_ms=None, error=_short(exc))


async def record(svc: Context, row: ClaimedRow, claim_id: UUID, result: Result) -> str:
    """Write the attempt and what follows from it, in one transaction; the outcome.

    Locks the endpoint before the message, the order every writer of both keeps (PATCH,
    DELETE), so none of them can deadlock with a worker."""
    settings = svc.settings
    delivery_id = row.id
    async with svc.db.transaction() as conn:
        state = None
        if await queue.lock_endpoint(conn, endpoint_id=row.endpoint_id):
            state = await queue.lock_delivery(conn, delivery_id=delivery_id)
        if state is None:
            return "gone"  # the endpoint was deleted while we sent
        now = state.now
        started = now - timedelta(milliseconds=result.latency_ms or 0)
        ours = state.claim == claim_id and state.status == "pending"
        next_at: datetime | None = None
        if result.ok:
            outcome = "delivered"
            await queue.mark_delivered(conn, delivery_id=delivery_id)
            await queue.endpoint_succeeded(conn, endpoint_id=row.endpoint_id)
        else:
            first = state.first_attempt_at or now
            outcome = "failed"
            if ours and (now - first).total_seconds() >= settings.webhooks_give_up_after_seconds:
                outcome = "dead"
                await queue.mark_dead(conn, delivery_id=delivery_id)
            elif ours:
                next_at = await queue.reschedule(
                    conn, delivery_id=delivery_id, delay_seconds=backoff(settings, row.attempts)
                )
            await _count_failure(svc, conn, row.endpoint_id, result)
        await queue.insert_attempt(
            conn,
            delivery_id=delivery_id,
            endpoint_id=row.endpoint_id,
            attempt=row.attempts,
            outcome=outcome,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
            attempted_at=started,
            next_attempt_at=next_at,
        )
    WEBHOOK_ATTEMPTS.labels(outcome=outcome).inc()
    return outcome


async def _count_failure(svc: Context, conn: Conn, endpoint_id: UUID, result: Result) -> None:
    settings = svc.settings
    streak = await queue.endpoint_failed(conn, endpoint_id=endpoint_id)
    if streak is None or not streak.enabled:
        return
    failing_for = (streak.now - streak.failing_since).total_seconds()
    if (
        streak.consecutive_failures >= settings.webhooks_disable_after_failures
        and failing_for >= settings.webhooks_disable_after_seconds
    ):
        reason = (
            f"Disabled automatically: all {streak.consecutive_failures} delivery attempts "
            f"since {streak.failing_since.isoformat()} failed (last: {result.error}). "
            "Fix the receiver, then PATCH enabled=true to resume; queued messages wait."
        )
        await repository.disable_endpoint(conn, endpoint_id=endpoint_id, reason=reason)
        if svc.db is not svc.shards.catalog:  # a cluster's copy: the endpoint itself
            await copies.disable_everywhere(svc, endpoint_id, reason)
        WEBHOOK_ENDPOINTS_DISABLED.inc()
        log.warning("webhook endpoint %s disabled: %s", endpoint_id, reason)


async def deliver(svc: Context, client: httpx.AsyncClient, row: ClaimedRow, claim_id: UUID) -> str:
    result = await send(client, svc.settings, row)
    return await record(svc, row, claim_id, result)


async def claim(svc: Context, limit: int) -> tuple[UUID, list[ClaimedRow]]:
    claim_id = uuid7()
    async with svc.db.transaction() as conn:
        rows = await queue.claim(
            conn, claim_id=claim_id, limit=limit, lease_seconds=lease_seconds(svc.settings)
        )
    return claim_id, rows


async def purge(svc: Context) -> int:
    async with svc.db.transaction() as conn:
        return await queue.purge_finished(
            conn, older_than_days=svc.settings.webhooks_retention_days, batch=PURGE_BATCH
        )
