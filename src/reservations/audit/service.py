"""Reading the audit log (admins, through the API) and verifying its hash chain (the CLI)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

from reservations.audit import chain, repository
from reservations.audit.repository import AuditEntryRow, ChainRow
from reservations.audit.schemas import AuditEntry, AuditPage
from reservations.context import Context
from reservations.kit.db import Conn, Database
from reservations.kit.pagination import decode_positions, encode_positions, merged
from reservations.tenancy.service import Principal


async def page(
    svc: Context,
    caller: Principal,
    *,
    object_id: UUID | None,
    actor: str | None,
    limit: int,
    cursor: str | None,
) -> AuditPage:
    before = decode_positions(cursor)
    databases = [svc.db, *(db for db in svc.shards.databases() if db is not svc.db)]

    def query(db: Database) -> Callable[[Conn], Awaitable[list[AuditEntryRow]]]:
        return lambda conn: repository.page(
            conn,
            tenant_id=caller.tenant_id,
            object_id=object_id,
            actor=actor,
            before_id=before.get(db.name),
            limit=limit,
        )

    pages = [[(db.name, r) for r in await db.read(query(db))] for db in databases]
    rows = merged(pages, key=lambda t: (t[1].changed_at, t[1].id), limit=limit, reverse=True)
    items = [
        AuditEntry(
            id=row.id,
            database=name,
            changed_at=row.changed_at,
            actor=row.actor,
            actor_key_prefix=row.actor_key_prefix,
            request_id=row.request_id,
            action=row.action,
            object_type=row.object_type,
            object_id=row.object_id,
            before=row.before,
            after=row.after,
            seq=row.seq,
            hash=row.hash.hex() if row.hash is not None else None,
        )
        for name, row in rows
    ]
    for name, row in rows:
        before[name] = row.id
    more = len(items) == limit
    return AuditPage(items=items, next_cursor=encode_positions(before) if more else None)


@dataclass
class Verification:
    """What `verify` found. `rows`: chain positions checked and intact."""

    rows: int
    head: bytes | None
    broken_at: int | None = None
    problem: str | None = None
    behind: int = 0
    pending: int = 0
    stale: int = 0

    @property
    def ok(self) -> bool:
        return self.broken_at is None and self.behind == 0 and self.stale == 0


async def verify(
    db: Database,
    *,
    max_unsealed_age_seconds: float,
    anchor: tuple[int, bytes] | None = None,
    batch: int = 5000,
) -> Verification:
    """Recompute the whole chain from the stored rows, in one snapshot, and stop at the first
    position that does not hold: a seal missing (a gap in seq), its audit row missing, or a
    hash that differs (the row, or an earlier one's seal, was changed). Then count unsealed
    rows: behind the chain's head (the sealer passed them, so they were never written by
    the triggers in time, or their seal was removed: tampering) and pending ones older than
    `max_unsealed_age_seconds` (the sealer is not running or cannot keep up).

    Someone who can rewrite the tables could also recompute every hash after their change,
    or cut the chain's tail; an `anchor` (a position and the hash an earlier verify printed
    for it, kept somewhere else) catches both up to that position."""
    async with db.connection() as conn, conn.transaction():
        await repository.snapshot(conn)
        checked, previous, head_cursor = 0, chain.GENESIS, None
        while True:
            rows = await repository.chain(conn, after_seq=checked, limit=batch)
            for row in rows:
                seq = checked + 1
                problem = _problem(row, seq, previous, anchor)
                if problem is not None:
                    return Verification(rows=checked, head=None, broken_at=seq, problem=problem)
                previous = row.hash
                head_cursor = (row.seal_txid, row.audit_id)
                checked = seq
            if len(rows) < batch:
                break
        if anchor is not None and checked < anchor[0]:
            return Verification(
                rows=checked,
                head=None,
                broken_at=checked + 1,
                problem=f"the chain ends before the anchor's position {anchor[0]}",
            )
        counts = await repository.unsealed_counts(
            conn, head=head_cursor, older_than_seconds=max_unsealed_age_seconds
        )
    return Verification(
        rows=checked,
        head=previous if checked else None,
        behind=counts.behind,
        pending=counts.pending,
        stale=counts.stale,
    )


def _problem(
    row: ChainRow, seq: int, previous: bytes, anchor: tuple[int, bytes] | None
) -> str | None:
    if row.seq != seq:
        return f"seal {seq} is missing (the next one is {row.seq})"
    audited = row.audited()
    if audited is None:
        return f"audit row {row.audit_id} is missing"
    if audited.txid != row.seal_txid:
        return f"audit row {row.audit_id} has another transaction id than when sealed"
    if chain.link(previous, audited, seq) != row.hash:
        return f"audit row {row.audit_id} (or the seal) has changed since it was sealed"
    if anchor is not None and anchor[0] == seq and row.hash != anchor[1]:
        return "the chain differs from the anchor here: it was rewritten"
    return None
