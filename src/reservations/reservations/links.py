"""Confirm links (docs/agents.md): a signed, expiring URL an agent's hold carries, for a
person to open on the booking page and confirm with their own booker or admin key.

The token is `<reservation id>.<expiry, unix seconds>.<HMAC-SHA256>`, signed over the
tenant, the reservation and the expiry with RESERVATIONS_CONFIRM_LINK_SECRET (unset: a random
secret per process, so links stop working when it restarts). A valid link lets the key that
presents it see and confirm that one reservation though another key (the agent's) made it;
it grants nothing else, and an agent key cannot use it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from uuid import UUID

from reservations.config import Settings
from reservations.errors import Forbidden

_EPHEMERAL = secrets.token_bytes(32)
MAX_TOKEN = 200


def _secret(settings: Settings) -> bytes:
    configured = settings.confirm_link_secret
    return configured.encode() if configured else _EPHEMERAL


def _signature(settings: Settings, tenant_id: UUID, reservation_id: UUID, expires: int) -> str:
    message = f"confirm:{tenant_id}:{reservation_id}:{expires}".encode()
    digest = hmac.new(_secret(settings), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(
    settings: Settings, tenant_id: UUID, reservation_id: UUID, now: datetime
) -> tuple[str, datetime]:
    """The confirm link of a reservation (the booking page, absolute with
    RESERVATIONS_PUBLIC_URL) and when it stops working."""
    expires = int((now + timedelta(seconds=settings.confirm_link_ttl_seconds)).timestamp())
    signature = _signature(settings, tenant_id, reservation_id, expires)
    base = settings.public_url.rstrip("/")
    link = f"{base}/app?confirm={reservation_id}.{expires}.{signature}"
    return link, datetime.fromtimestamp(expires, tz=UTC)


def verify(
    settings: Settings, tenant_id: UUID, reservation_id: UUID, link_token: str, now: datetime
) -> None:
    """Refuse (403) a link that is not this reservation's, not signed by this service for
    this tenant, or expired."""
    parts = link_token.split(".")
    valid = (
        len(parts) == 3
        and parts[0] == str(reservation_id)
        and parts[1].isdigit()
        and len(parts[1]) <= 12
        and hmac.compare_digest(
            parts[2], _signature(settings, tenant_id, reservation_id, int(parts[1]))
        )
    )
    if not valid:
        raise Forbidden(
            "This confirm link is not valid for this reservation in your tenant; ask for a new "
            "link (the agent's hold_slot returns one) or confirm with the key that made it."
        )
    if int(parts[1]) <= now.timestamp():
        raise Forbidden("This confirm link has expired; ask the agent for a new one.")
