"""Browser access to the dashboard with the admin key.

An API client sends the admin key as `Authorization: Bearer KEY` (or `x-api-key`), like every
admin endpoint. A browser can't set headers on a page load, so it presents the key once —
`/dashboard?key=KEY` or the login form — and gets a session (`spendgate.server.sessions`): a
random token in an HttpOnly, SameSite=Strict cookie scoped to `/dashboard`, stored hashed on
the server, expiring, revoked by logout and by rotating the admin key. The session opens
the dashboard only; the admin API takes the key as a header and nothing else.

With no admin key configured (the `server.admin_key_env` variable unset) the dashboard
follows the admin API: closed (403, saying how to set one) unless `server.auth: off`, the
explicit no-auth development mode, where it is open and says so in a banner.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from spendgate.server.sessions import SessionStore

__all__ = ["COOKIE", "COOKIE_PATH", "admin_key", "is_authorized", "presented_key", "same_origin"]

COOKIE = "spendgate_dashboard"
COOKIE_PATH = "/dashboard"


def admin_key(env_name: str | None) -> str | None:
    """The configured admin key, or None when there is none."""
    if not env_name:
        return None
    return os.environ.get(env_name) or None


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The admin key an API client sent in a header, if any."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None


def is_authorized(
    key: str, headers: Mapping[str, str], cookies: Mapping[str, str], sessions: SessionStore
) -> bool:
    """True when the request carries the admin key in a header or a live session cookie."""
    sent = presented_key(headers)
    if sent is not None and hmac.compare_digest(sent.encode(), key.encode()):
        return True
    return sessions.check(cookies.get(COOKIE), key) is not None


def same_origin(headers: Mapping[str, str]) -> bool:
    """A state-changing browser request (login, logout) must come from our own pages.

    Browsers say where a request comes from in `Sec-Fetch-Site`, which pages can't forge;
    older ones only in `Origin` (which is `null` under a no-referrer policy, so it is the
    fallback), and it must then name this host. A client that sends neither is not a
    browser acting for someone else (curl, an SDK) and is let through."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc == headers.get("host", "")
    return True
