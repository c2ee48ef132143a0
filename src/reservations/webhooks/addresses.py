"""Where webhooks may go: http(s) URLs whose host resolves only to public addresses.

A tenant's URL is checked when it is registered and again before every delivery (a DNS
answer can change between the two); the delivery then connects to the address that was
checked, not to whatever a second lookup would return. Unless
`RESERVATIONS_WEBHOOKS_ALLOW_PRIVATE` is set, loopback, private, link-local, CGNAT,
multicast, reserved, documentation, IPv6 unique-local and IPv4-embedding addresses
(mapped, 6to4, Teredo, NAT64) are refused, and only https is accepted."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
# RFC 1035 (as the resolver's IDNA encoding enforces: a longer or empty label is an error
# there, not a failed lookup).
MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
# Letters, digits, hyphens inside, and the underscore some DNS names carry.
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
RESOLVE_TIMEOUT_SECONDS = 5.0

_V4 = [
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT (shared address space)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved (6to4 relay)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved (benchmarking)"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
]
_V6 = [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b::/96", "NAT64 (embeds an IPv4 address)"),
    ("64:ff9b:1::/48", "NAT64 (embeds an IPv4 address)"),
    ("100::/64", "discard-only"),
    ("2001:db8::/32", "documentation"),
    ("2001::/23", "reserved (IETF protocol assignments, Teredo)"),
    ("2002::/16", "6to4 (embeds an IPv4 address)"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
]
_BLOCKED: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = [
    (ipaddress.ip_network(net), label) for net, label in (*_V4, *_V6)
]


class AddressRefused(Exception):
    """The URL may not receive webhooks; the message says why, for the caller or the log."""


@dataclass(frozen=True)
class Target:
    """A syntactically acceptable webhook URL, split into what delivery needs."""

    url: str
    scheme: str
    host: str  # lowercase, without brackets
    port: int
    path: str  # path and query, as given

    @property
    def default_port(self) -> bool:
        return self.port == (443 if self.scheme == "https" else 80)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.default_port else f"{host}:{self.port}"

    def url_for(self, address: IPAddress) -> str:
        """The URL with the host replaced by an address already checked."""
        host = f"[{address.compressed}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse(url: str, *, allow_private: bool) -> Target:
    """Check the URL's form (not where it points); ValueError says what is wrong."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if scheme == "http" and not allow_private:
        raise ValueError("must use https (plain http is only accepted for private receivers)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@); authenticate with the "
                         "signature instead")  # fmt: skip
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    if not host.isascii():
        raise ValueError("must write an international host name in its ASCII (xn--) form")
    if _literal(host) is None:
        _check_host_name(host)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(
        url=url,
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        path=path,
    )


def _check_host_name(host: str) -> None:
    if len(host) > MAX_HOST_LENGTH:
        raise ValueError(f"must have a host name of at most {MAX_HOST_LENGTH} characters")
    for label in host.split("."):
        if not label:
            raise ValueError(
                "must not have an empty label in its host name (two dots in a row, or a "
                "leading dot)"
            )
        if len(label) > MAX_LABEL_LENGTH:
            raise ValueError(
                f"must not have a label longer than {MAX_LABEL_LENGTH} characters in its host "
                f"name ({label[:20]}... has {len(label)})"
            )
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"must have a host name of letters, digits and hyphens ({label!r} is not a "
                "valid label; a hyphen may not start or end one)"
            )


def refusal(address: IPAddress) -> str | None:
    """Why webhooks may not go to this address, or None if it is public."""
    for network, label in _BLOCKED:
        if address.version == network.version and address in network:
            return label
    if not address.is_global:
        return "not globally routable"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolve(target: Target) -> list[IPAddress]:
    """Every address the host resolves to (an IP literal is its own answer)."""
    literal = _literal(target.host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT_SECONDS,
        )
    except (OSError, TimeoutError, UnicodeError):
        # UnicodeError: the IDNA encoding refused the name (parse() refuses those first).
        raise AddressRefused(f"the host {target.host!r} does not resolve") from None
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise AddressRefused(f"the host {target.host!r} does not resolve")
    return found


async def public_addresses(target: Target) -> list[IPAddress]:
    """Resolve the host and insist that every answer is public (one private answer is
    enough to refuse: a client picks among them, and so could an attacker's DNS)."""
    addresses = await resolve(target)
    for address in addresses:
        why = refusal(address)
        if why is not None:
            named = "" if str(address) == target.host else f" resolves to {address}, which"
            raise AddressRefused(
                f"{target.host}{named} is not a public address ({why}); webhooks only go to "
                "public addresses"
            )
    return addresses
