"""Config sections for what the gateway keeps between requests."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ResponsesConfig"]


class ResponsesConfig(BaseModel):
    """The `responses:` config section."""

    model_config = ConfigDict(extra="forbid")

    store: bool = True
    """Keep Responses (unless a request says `store: false`) for `previous_response_id` and
    `GET /v1/responses/{id}`."""
    ttl_days: float = Field(default=30.0, gt=0)
    """How long a stored Response lives (OpenAI keeps them 30 days)."""
    max_stored_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    """A Response whose record (input plus output) is larger is not stored."""
    recent: int = Field(default=2048, ge=0)
    """Records kept in process after they are written, so the next turn on this replica
    needs no database read."""
