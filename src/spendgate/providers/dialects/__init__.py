"""One module per wire format, and `dialect_for(api)` to get the one a call speaks.

Each dialect (see `base.Dialect`) owns its format's usage parsing, token counting, text and
system-prompt extraction, cache-key body, error bodies, stream replay and translation to the
other formats. Callers ask `dialect_for(call.api)` instead of branching on `call.api`.

Adding a wire format: write `dialects/<name>.py` implementing `Dialect`, add its literal to
`spendgate.call.API` and its singleton to `_DIALECTS` below, and give it a route or an
adapter (see docs/pipeline.md, "Adding a wire format").
"""

from __future__ import annotations

from spendgate.call import API
from spendgate.providers.dialects.anthropic import ANTHROPIC
from spendgate.providers.dialects.base import Dialect
from spendgate.providers.dialects.openai import OPENAI
from spendgate.providers.dialects.responses import RESPONSES

__all__ = ["ANTHROPIC", "DIALECTS", "OPENAI", "RESPONSES", "Dialect", "dialect_for"]

DIALECTS: dict[API, Dialect] = {
    OPENAI.api: OPENAI,
    ANTHROPIC.api: ANTHROPIC,
    RESPONSES.api: RESPONSES,
}


def dialect_for(api: API | str) -> Dialect:
    """The dialect of wire format `api`; a KeyError names an unknown format."""
    return DIALECTS[api]  # type: ignore[index]
