"""API-key checks: the key in ``X-API-Key``, compared in constant time with every configured key."""
from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Optional, Sequence

from .config import ApiKey

HEADER = "X-API-Key"


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's name (never the key) and its scope."""

    name: str
    scope: str

    def allows(self, scope: str) -> bool:
        """``admin`` may do everything; ``recognize`` only recognise and list."""
        return self.scope == "admin" or self.scope == scope


#: Every request of a server started with ``--insecure-no-auth`` (loopback only).
ANONYMOUS = Principal("anonymous", "admin")


class AuthError(Exception):
    """401 (no or unknown key) or 403 (a key without the scope)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def authenticate(presented: Optional[str], keys: Sequence[ApiKey], insecure_no_auth: bool = False) -> Principal:
    """The principal of ``presented``. Every configured key is compared (hmac.compare_digest, no
    early exit), so the time taken says nothing about which key, or how much of one, matched.

    Raises:
        AuthError: 401 when the key is missing or unknown.
    """
    if insecure_no_auth and not keys:
        return ANONYMOUS
    if not presented:
        raise AuthError(401, f"missing API key: send it in the {HEADER} header")
    given = presented.encode("utf-8", "surrogateescape")
    found = None
    for k in keys:
        if hmac.compare_digest(given, k.key.encode("utf-8")) and found is None:
            found = k
    if found is None:
        raise AuthError(401, "unknown API key")
    return Principal(found.name, found.scope)


def authorize(principal: Principal, scope: str) -> Principal:
    """Raises AuthError 403 unless ``principal`` may act in ``scope``."""
    if not principal.allows(scope):
        raise AuthError(403, f"key {principal.name!r} has scope {principal.scope!r}; this needs {scope!r}")
    return principal
