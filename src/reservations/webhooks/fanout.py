"""The fan-out: copy the outbox's new events into each endpoint's delivery queue.

Per endpoint, one transaction locks its position (SKIP LOCKED: one worker per endpoint at a
time), reads the tenant's next events in the outbox's commit-safe order, queues the ones the
endpoint wants and moves the position, so an event is queued exactly once or not at all.

The outbox order (txid, id) is not commit order: an event can be read before an earlier
event of the same resource whose transaction had the larger txid. So, per (endpoint,
resource), the fan-out keeps the highest `resource_seq` it has considered and always queues
the whole range up to the new event. Every event in that range is committed (a resource's
counter stays locked until its writer commits), and an event met again later is below the
mark and skipped. Each (endpoint, resource) queue is therefore gap-free in sequence order,
which is all the dispatcher needs to deliver in order."""

from __future__ import annotations

from uuid import UUID

from reservations.context import Context
from reservations.webhooks import queue

BATCH = 500


async def fan_out_endpoint(svc: Context, endpoint_id: UUID, *, batch: int = BATCH) -> int:
    """Queue one batch of the endpoint's new events; how many events were read (0: none
    readable, or another worker has the endpoint)."""
    async with svc.db.transaction() as conn:
        position = await queue.lock_fanout(conn, endpoint_id=endpoint_id)
        if position is None:
            return 0
        events = await queue.outbox_after(
            conn,
            tenant_id=position.tenant_id,
            after_txid=position.after_txid,
            after_id=position.after_id,
            limit=batch,
        )
        if not events:
            return 0
        tops: dict[UUID, int] = {}
        for event in events:
            rid = event.resource_id
            tops[rid] = max(tops.get(rid, 0), event.resource_seq)
        marks = await queue.stream_marks(conn, endpoint_id=endpoint_id, resource_ids=list(tops))
        ranges = [
            (rid, marks.get(rid, 0), top) for rid, top in tops.items() if top > marks.get(rid, 0)
        ]
        await queue.enqueue(conn, endpoint_id=endpoint_id, ranges=ranges)
        if ranges:
            await queue.set_stream_marks(
                conn, endpoint_id=endpoint_id, marks={rid: top for rid, _, top in ranges}
            )
        last = events[-1]
        await queue.advance_fanout(conn, endpoint_id=endpoint_id, txid=last.txid, event_id=last.id)
    return len(events)


async def fan_out(svc: Context, *, batch: int = BATCH) -> int:
    """Bring every endpoint's queue up to the outbox; how many events were read."""
    async with svc.db.connection() as conn:
        due = await queue.fanout_due(conn)
    total = 0
    for endpoint_id in due:
        while True:
            read = await fan_out_endpoint(svc, endpoint_id, batch=batch)
            total += read
            if read < batch:
                break
    return total
