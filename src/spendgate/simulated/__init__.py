"""A real HTTP upstream speaking OpenAI's and Anthropic's wire formats, for the demo, the tests
and the benchmarks (we cannot reach the real providers, and must not pay them to be measured).

It is a server, not a provider adapter: the gateway reaches it over HTTP through its OpenAI
and Anthropic adapters (deployment `provider: simulated`). Answers are deterministic per
request (`model.py`), usage is counted with `spendgate.tokens`, provider prompt caching is
modelled (`prompt_cache.py`), and faults are queued over HTTP (`faults.py`) so a gateway test
can drive retries and fallbacks across a real socket. One module per wire format: `chat.py`,
`messages.py`, `responses.py`, `embeddings.py`, `batches.py`; `app.py` routes to them and
`server.py` runs it.
"""

from spendgate.simulated.app import SimApp, create_app
from spendgate.simulated.server import SimulatedUpstream, serve

__all__ = ["SimApp", "SimulatedUpstream", "create_app", "serve"]
