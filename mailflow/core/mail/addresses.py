"""The per-delivery addresses mailflow sends from and asks replies to.

``reply+KEY@DOMAIN`` is the Reply-To of an alert email; ``bounce+KEY@DOMAIN``
is its envelope sender, so a bounce names the delivery it is about.
"""

from __future__ import annotations

import base64
import enum
import re
import secrets
from dataclasses import dataclass

KEY_PATTERN = re.compile(r"^[a-z2-7]{32}$")


def new_key() -> str:
    """An unguessable key for a reply or bounce address: 160 random bits,
    lower-case base32 so that mail systems that fold the case of local parts
    keep it intact."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").lower()


class AddressKind(enum.StrEnum):
    REPLY = "reply"
    BOUNCE = "bounce"


@dataclass(frozen=True)
class ServiceAddress:
    kind: AddressKind
    key: str


def reply_address(key: str, domain: str) -> str:
    return f"{AddressKind.REPLY}+{key}@{domain}"


def bounce_address(key: str, domain: str) -> str:
    return f"{AddressKind.BOUNCE}+{key}@{domain}"


def parse_service_address(address: str, domain: str) -> ServiceAddress | None:
    """The kind and key of one of our addresses, or None for any other."""
    local, _, addr_domain = address.strip().strip("<>").rpartition("@")
    if addr_domain.lower() != domain.lower():
        return None
    kind, plus, key = local.lower().partition("+")
    if not plus or kind not in AddressKind.__members__.values() or not KEY_PATTERN.match(key):
        return None
    return ServiceAddress(AddressKind(kind), key)
