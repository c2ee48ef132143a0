"""Identifiers: UUIDv7 (time-ordered, so keyset order follows creation order and btree inserts
stay local) and the advisory-lock key derived from an id."""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> uuid.UUID:
    """RFC 9562 UUIDv7: 48-bit Unix milliseconds, version, 74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def uuid7_beside(owner: uuid.UUID) -> uuid.UUID:
    """A UUIDv7 for something that lives with `owner` (a resource): its last 16 bits are the
    owner's, so it routes to the owner's shard (kit/shardmap.py); 58 random bits remain."""
    value = uuid7().int
    return uuid.UUID(int=(value & ~0xFFFF) | (owner.int & 0xFFFF))


def lock_key(ident: uuid.UUID) -> int:
    """A signed 64-bit advisory-lock key from an id's random tail (the head of a UUIDv7 is a
    timestamp, which would make ids created in the same millisecond share a lock)."""
    return int.from_bytes(ident.bytes[8:], "big", signed=True)
