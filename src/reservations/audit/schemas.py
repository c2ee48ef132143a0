"""What the audit log looks like on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field


class AuditEntry(BaseModel):
    id: int = Field(description="The row's number in its database's log (not its position).")
    database: str = Field(
        default="primary",
        description="Whose log: `primary` (the catalog), or a shard cluster (`shard-a`); "
        "each has its own numbering and hash chain.",
    )
    changed_at: datetime
    actor: str | None = Field(
        description="The API key id that made the change, `system:<job>` for background "
        "jobs (sweeper, history, cli, bootstrap), or null for a change made outside the "
        "application (plain SQL)."
    )
    actor_key_prefix: str | None = Field(description="The acting key's prefix, if a key.")
    request_id: str | None = Field(description="The `X-Request-ID` of the request.")
    action: Literal["insert", "update", "delete"]
    object_type: str = Field(description="resource, reservation, booking, api_key or feed.")
    object_id: UUID
    before: dict[str, Any] | None = Field(description="The row before (null for insert).")
    after: dict[str, Any] | None = Field(description="The row after (null for delete).")
    seq: int | None = Field(description="Position in the hash chain; null until sealed.")
    hash: str | None = Field(description="The chain's SHA-256 at this position (hex).")


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None
