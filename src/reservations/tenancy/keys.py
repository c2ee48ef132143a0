"""API key format: `rsv_<prefix>_<secret><checksum>`.

The prefix finds the row; only a SHA-256 of the secret is stored (the secret has 190 bits of
entropy, so a slow password hash would add latency and no safety); the CRC-32 checksum lets a
mistyped or truncated key be refused without a database read (and lets secret scanners
recognise leaked keys).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass

_ALPHABET = string.digits + string.ascii_letters
_PREFIX_LEN, _SECRET_LEN, _CHECK_LEN = 12, 32, 6
_PATTERN = re.compile(
    rf"rsv_([0-9A-Za-z]{{{_PREFIX_LEN}}})_([0-9A-Za-z]{{{_SECRET_LEN}}})([0-9A-Za-z]{{{_CHECK_LEN}}})"
)


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def _checksum(prefix: str, secret: str) -> str:
    return _base62(zlib.crc32(f"{prefix}_{secret}".encode()), _CHECK_LEN)


@dataclass(frozen=True)
class NewKey:
    prefix: str
    secret_hash: bytes
    token: str


def generate() -> NewKey:
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(_PREFIX_LEN))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LEN))
    token = f"rsv_{prefix}_{secret}{_checksum(prefix, secret)}"
    return NewKey(prefix=prefix, secret_hash=hash_secret(secret), token=token)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key with a valid checksum, else None."""
    match = _PATTERN.fullmatch(token)
    if not match:
        return None
    prefix, secret, check = match.groups()
    if not hmac.compare_digest(check, _checksum(prefix, secret)):
        return None
    return prefix, secret


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
