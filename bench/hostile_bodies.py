"""Random request bodies for both wire formats and both directions of translation: the
shapes a hostile or buggy client sends (wrong types, unknown block kinds, odd nesting). The
edge must answer each with a proper status and one ledger row; `tests/test_hostile_input.py`
runs a seeded batch of them, `bench/faults.py` a larger one.
"""

from __future__ import annotations

import random
import string
from typing import Any

__all__ = ["random_body", "value"]

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


def value(rnd: random.Random, depth: int = 0) -> Any:
    scalars = [
        None,
        True,
        0,
        -1,
        10**12,
        0.5,
        "",
        "text",
        "".join(rnd.choices(string.printable, k=5)),
    ]
    if depth >= 3 or rnd.random() < 0.4:
        return rnd.choice(scalars)
    keys = ["type", "text", "role", "content", "image_url", "source", "id", "name", "input",
            "tool_use_id", "url", "function", "arguments"]  # fmt: skip
    if rnd.random() < 0.5:
        return [value(rnd, depth + 1) for _ in range(rnd.randrange(3))]
    block = {rnd.choice(keys): value(rnd, depth + 1) for _ in range(rnd.randrange(4))}
    if rnd.random() < 0.6:
        kinds = ["text", "image_url", "image", "tool_use", "tool_result", "input_audio", "file",
                 "document", "thinking", "refusal"]  # fmt: skip
        block["type"] = rnd.choice(kinds)
    return block


def random_body(rnd: random.Random) -> tuple[str, dict[str, Any]]:
    model = rnd.choice(["gpt-4o-mini", "claude-sonnet-4", "claude-3-5-haiku", "gpt-4o"])
    roles = ["user", "assistant", "system", "tool", "developer"]
    if rnd.random() < 0.5:
        messages = []
        for _ in range(rnd.randrange(1, 4)):
            content = rnd.choice(["hi", value(rnd), [value(rnd), value(rnd)]])
            m = {"role": rnd.choice([*roles, value(rnd)]), "content": content}
            for key in ("tool_calls", "tool_call_id", "name"):
                if rnd.random() < 0.15:
                    m[key] = value(rnd)
            messages.append(m)
        body: dict[str, Any] = {"model": model, "messages": messages}
        optional = ["tools", "tool_choice", "response_format", "stop", "max_tokens", "stream",
                    "n", "stream_options", "temperature", "metadata"]  # fmt: skip
        path = CHAT
    else:
        messages = [{"role": rnd.choice(["user", "assistant"]),
                     "content": rnd.choice(["hi", [value(rnd), value(rnd)], value(rnd)])}
                    for _ in range(rnd.randrange(1, 3))]  # fmt: skip
        body = {"model": model, "messages": messages, "max_tokens": rnd.choice([16, value(rnd)])}
        optional = ["system", "tools", "tool_choice", "stop_sequences", "stream", "thinking",
                    "metadata"]  # fmt: skip
        path = MESSAGES
    for key in optional:
        if rnd.random() < 0.15:
            body[key] = value(rnd)
    return path, body
