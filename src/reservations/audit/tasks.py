"""The sealer: extends the hash chain over audit rows of finished transactions.

Runs in the worker loop (reservations.reservations.tasks) of every process; one at a time
extends the chain (a transaction-level advisory lock; the others skip the round). Writers
never wait for it: they only insert audit rows, and the chain is computed here, afterwards,
in the one order no later commit can change: (txid, id), for transactions older than every
one still running (as the event stream reads the outbox)."""

from __future__ import annotations

from reservations.audit import chain, repository
from reservations.audit.metrics import AUDIT_SEALED
from reservations.kit.db import Database


async def seal(db: Database, *, batch: int = 1000) -> int:
    """Seal every audit row that can be sealed now, `batch` per transaction; returns how
    many. 0 as well when another process holds the sealer's lock."""
    total = 0
    while True:
        async with db.transaction() as conn:
            if not await repository.try_seal_lock(conn):
                break
            top = await repository.head(conn)
            after = (top.txid, top.audit_id) if top is not None else None
            rows = await repository.unsealed(conn, after=after, limit=batch)
            if not rows:
                break
            seq = top.seq if top is not None else 0
            previous = top.hash if top is not None else chain.GENESIS
            seqs, hashes = [], []
            for row in rows:
                seq += 1
                previous = chain.link(previous, row, seq)
                seqs.append(seq)
                hashes.append(previous)
            await repository.insert_seals(
                conn,
                seqs=seqs,
                audit_ids=[r.id for r in rows],
                txids=[r.txid for r in rows],
                hashes=hashes,
            )
        total += len(rows)
        AUDIT_SEALED.inc(len(rows))
        if len(rows) < batch:
            break
    return total
