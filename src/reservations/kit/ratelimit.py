"""Rate limits as GCRA (a token bucket kept as one timestamp) in Redis, and their headers.

One Lua script checks every bucket of a request atomically, using the Redis server's clock
(so API instances with skewed clocks agree): the request is admitted only if every bucket
admits it, and only then is any bucket charged, so a refused request costs nothing.

A bucket with quota q per window w refills one unit every w/q seconds and holds at most q.
Its state is the "theoretical arrival time" (TAT): the instant it would be full again.

Headers follow draft-ietf-httpapi-ratelimit-headers-11 (structured fields):
`RateLimit-Policy: "key";q=100;w=60` and `RateLimit: "key";r=42;t=12`, where r is what is
left now and t the seconds until the bucket is full again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reservations.kit.redis import UNAVAILABLE, Client, RedisTier

# KEYS: one per bucket. ARGV: quota and window (microseconds) per bucket, in KEYS order.
# Returns per bucket: {admitted 0/1, remaining, ms until full, ms until one unit is free}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local tats, news, oks = {}, {}, {}
local all_ok = true
for i = 1, n do
  local quota = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local interval = window / quota
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  news[i] = tat + interval
  oks[i] = news[i] - window <= now
  if not oks[i] then all_ok = false end
end
local out = {}
for i = 1, n do
  local quota = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local interval = window / quota
  local tat = tats[i]
  if all_ok then
    tat = news[i]
    redis.call('SET', KEYS[i], string.format('%.0f', tat),
               'PX', math.ceil((tat - now) / 1000) + 1000)
  end
  local remaining = math.floor((window - (tat - now)) / interval + 1e-6)
  if remaining < 0 then remaining = 0 end
  local retry = 0
  if not oks[i] then retry = math.ceil((news[i] - window - now) / 1000) end
  out[i] = {oks[i] and 1 or 0, remaining, math.ceil((tat - now) / 1000), retry}
end
return out
"""


@dataclass(frozen=True)
class Policy:
    name: str
    quota: int
    window_seconds: int

    def header_item(self) -> str:
        return f'"{self.name}";q={self.quota};w={self.window_seconds}'


@dataclass(frozen=True)
class Limit:
    """One bucket's answer for one request."""

    policy: Policy
    admitted: bool
    remaining: int
    reset_seconds: int
    retry_after_seconds: int

    def header_item(self) -> str:
        return f'"{self.policy.name}";r={self.remaining};t={self.reset_seconds}'


class RateLimiter:
    def __init__(self, tier: RedisTier) -> None:
        self.tier = tier
        self._script: tuple[Client, Any] | None = None

    async def hit(self, buckets: Sequence[tuple[Policy, str]]) -> list[Limit] | None:
        """Charge one request to every (policy, bucket id), atomically; None if Redis could
        not answer (the caller fails open)."""
        keys = [self.tier.key("rl", p.name, bucket) for p, bucket in buckets]
        args: list[int] = []
        for p, _ in buckets:
            args += [p.quota, p.window_seconds * 1_000_000]

        async def call(client: Client) -> Any:
            # redis-py sends EVALSHA and loads the script on NOSCRIPT (for example after a
            # Redis restart); the Script object is made once per client.
            if self._script is None or self._script[0] is not client:
                self._script = (client, client.register_script(_GCRA))
            return await self._script[1](keys=keys, args=args)

        result = await self.tier.run("rate_limit", call)
        if result is UNAVAILABLE:
            return None
        return [
            Limit(
                policy=p,
                admitted=bool(row[0]),
                remaining=int(row[1]),
                reset_seconds=int(row[2] + 999) // 1000,
                retry_after_seconds=max(1, math.ceil(int(row[3]) / 1000)),
            )
            for (p, _), row in zip(buckets, result, strict=True)
        ]


def headers(limits: Sequence[Limit]) -> list[tuple[bytes, bytes]]:
    policy = ", ".join(limit.policy.header_item() for limit in limits)
    state = ", ".join(limit.header_item() for limit in limits)
    return [(b"ratelimit-policy", policy.encode()), (b"ratelimit", state.encode())]


STATE_KEY = "ratelimit_headers"


class RateLimitHeadersMiddleware:
    """Adds the headers a rate-limit check left in the request state to the response (the
    check runs in a dependency, which cannot touch responses that endpoints build)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = scope.get("state", {}).get(STATE_KEY)
                if extra:
                    present = {k.lower() for k, _ in message.get("headers", [])}
                    message["headers"] = [
                        *message.get("headers", []),
                        *(h for h in extra if h[0] not in present),
                    ]
            await send(message)

        await self.app(scope, receive, send_wrapper)
