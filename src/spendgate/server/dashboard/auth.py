"""Browser access to the dashboard with the admin key.

An API client sends the admin key as `Authorization: Bearer KEY` (or `x-api-key`), like every
admin endpoint. A browser can't set headers on a page load, so it presents the key once —
`/dashboard?key=KEY` or the login form — and gets an HttpOnly, SameSite=Strict cookie. The
cookie holds an HMAC of a fixed label under the admin key, not the key itself: it can't be
replayed as an API key, and rotating the admin key logs every browser out.

The admin app's `spendgate_admin` cookie (the raw key) is accepted too. With no admin key
configured (the `server.admin_key_env` variable unset) the dashboard follows the admin API:
closed (403, saying how to set one) unless `server.auth: off`, the explicit no-auth
development mode, where it is open and says so in a banner.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

__all__ = [
    "ADMIN_COOKIE",
    "COOKIE",
    "admin_key",
    "cookie_value",
    "is_authorized",
    "presented_key",
]

COOKIE = "spendgate_dashboard"
ADMIN_COOKIE = "spendgate_admin"
"""The admin app's cookie, which holds the key itself."""
_LABEL = b"spendgate-dashboard-session-v1"


def admin_key(env_name: str | None) -> str | None:
    """The configured admin key, or None when there is none (dashboard open)."""
    if not env_name:
        return None
    return os.environ.get(env_name) or None


def cookie_value(key: str) -> str:
    return hmac.new(key.encode(), _LABEL, hashlib.sha256).hexdigest()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The admin key an API client sent in a header, if any."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None


def is_authorized(key: str, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
    """True when the request carries the admin key (header, our cookie or the admin's)."""
    for sent in (presented_key(headers), cookies.get(ADMIN_COOKIE)):
        if sent is not None and hmac.compare_digest(sent.encode(), key.encode()):
            return True
    token = cookies.get(COOKIE)
    return token is not None and hmac.compare_digest(token.encode(), cookie_value(key).encode())
