"""The worker's reminder step: every reminder due is recorded and its event appended to the
outbox in one transaction per batch, so webhooks and the event stream carry it like any
other event, once, whichever worker gets there (and after a restart, from what is recorded)."""

from __future__ import annotations

from datetime import timedelta

from reservations.context import Context
from reservations.events import repository as events
from reservations.reminders import repository

# A reminder whose moment passed more than this before any worker saw it is not sent (a
# reminder an hour late is still worth it; one for a booking made five minutes ahead with a
# day's lead is not).
CATCH_UP = timedelta(hours=1)
KEEP = timedelta(days=1)


async def send_reminders(svc: Context, *, batch: int = 500) -> int:
    hold_lead = timedelta(seconds=svc.settings.hold_expiring_seconds)
    total = 0
    while True:
        async with svc.db.unit() as unit:
            now = svc.clock.now()
            due = await repository.due(
                unit.conn, now=now, catch_up=CATCH_UP, hold_lead=hold_lead, batch=batch
            )
            if due:
                await events.lock_sequences(
                    unit.conn, resource_ids=sorted({r.resource_id for r in due})
                )
                total += await repository.send(unit.conn, due, now=now)
        if len(due) < batch:
            return total


async def purge_reminders(svc: Context) -> int:
    async with svc.db.unit() as unit:
        return await repository.purge(unit.conn, before=svc.clock.now() - KEEP)
