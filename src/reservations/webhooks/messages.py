"""What a delivery sends: the message id and the JSON body, built from the queued row."""

from __future__ import annotations

from uuid import UUID

import orjson

from reservations.kit.pagination import encode_cursor
from reservations.webhooks.queue import ClaimedRow

TEST_TYPE = "webhook.test"


def message_id(delivery_id: UUID) -> str:
    """The `webhook-id`: one per (endpoint, event), the same on every retry."""
    return f"msg_{delivery_id.hex}"


def event_id(txid: str | None, event_id: int | None) -> str | None:
    """The event's id as /v1/events shows it (and accepts as `after`)."""
    if txid is None or event_id is None:
        return None
    return encode_cursor(txid, event_id)


def body(row: ClaimedRow) -> bytes:
    """The Standard Webhooks payload shape (`type`, `timestamp`, `data`) plus the event's
    place in the outbox, so a receiver can order, dedupe or resume from /v1/events."""
    if row.event_id is None:
        return orjson.dumps(
            {
                "type": TEST_TYPE,
                "timestamp": row.created_at,
                "data": {
                    "endpoint_id": row.endpoint_id,
                    "message": "A test message: the endpoint receives and verifies webhooks.",
                },
            }
        )
    return orjson.dumps(
        {
            "type": row.event_type,
            "timestamp": row.event_created_at,
            "id": event_id(row.event_txid, row.event_id),
            "resource_id": row.resource_id,
            "resource_seq": row.resource_seq,
            "subject_id": row.subject_id,
            "data": row.data,
        }
    )
