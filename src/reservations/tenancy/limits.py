"""Rate limits per API key and per tenant (the policies; the mechanism is kit/ratelimit)."""

from __future__ import annotations

from reservations.config import Settings
from reservations.errors import RateLimited
from reservations.kit.metrics import RATE_LIMIT_DECISIONS
from reservations.kit.ratelimit import Policy, RateLimiter, headers
from reservations.tenancy.service import Principal


class CallerLimits:
    def __init__(self, limiter: RateLimiter, settings: Settings) -> None:
        self.limiter = limiter
        window = settings.rate_limit_window_seconds
        self.key = Policy("key", settings.rate_limit_key_requests, window)
        self.tenant = Policy("tenant", settings.rate_limit_tenant_requests, window)

    async def charge(self, caller: Principal) -> list[tuple[bytes, bytes]] | None:
        """Charge one request to the caller's key and tenant; raise RateLimited if either
        quota is used up. Returns the headers to send, or None when Redis cannot answer: then
        the request goes through unlimited (fail open; the database still protects itself
        with its pool and timeouts)."""
        limits = await self.limiter.hit(
            [(self.key, str(caller.api_key_id)), (self.tenant, str(caller.tenant_id))]
        )
        if limits is None:
            RATE_LIMIT_DECISIONS.labels("unavailable").inc()
            return None
        denied = [limit for limit in limits if not limit.admitted]
        if not denied:
            RATE_LIMIT_DECISIONS.labels("allowed").inc()
            return headers(limits)
        RATE_LIMIT_DECISIONS.labels("limited").inc()
        retry = max(limit.retry_after_seconds for limit in denied)
        raise RateLimited(
            violated=[limit.policy.name for limit in denied],
            retry_after=retry,
            headers={
                "RateLimit-Policy": ", ".join(lim.policy.header_item() for lim in limits),
                # Only the exhausted policies, with t = when a request will pass again, so
                # RateLimit agrees with Retry-After.
                "RateLimit": ", ".join(
                    f'"{lim.policy.name}";r=0;t={lim.retry_after_seconds}' for lim in denied
                ),
            },
        )
