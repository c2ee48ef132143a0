"""Feed tokens: 55 base62 characters, the feed's URL credential.

The first 12 (the prefix) find the row; the other 43 (256 bits) are the secret, stored only
as a SHA-256 and compared in constant time, as API keys are (tenancy.keys)."""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass

from reservations.tenancy.keys import hash_secret, secret_matches

_ALPHABET = string.digits + string.ascii_letters
PREFIX_LEN, SECRET_LEN = 12, 43
_PATTERN = re.compile(rf"([0-9A-Za-z]{{{PREFIX_LEN}}})([0-9A-Za-z]{{{SECRET_LEN}}})")

__all__ = ["NewToken", "generate", "parse", "secret_matches"]


@dataclass(frozen=True)
class NewToken:
    prefix: str
    secret_hash: bytes
    token: str


def generate() -> NewToken:
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LEN))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LEN))
    return NewToken(prefix=prefix, secret_hash=hash_secret(secret), token=prefix + secret)


def parse(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed token, else None."""
    match = _PATTERN.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None
