"""The `batches:` config section: polling passed-through batches, and the deferral lane.

```yaml
batches:
  poll_interval_s: 30
  defer:
    flush_interval_s: 60      # gather deferred calls this long, then send them as a batch
features:
  nightly-digest: {batchable: true}   # every non-streaming call of the feature is deferred
```
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BatchesConfig", "DeferConfig"]


class DeferConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    """Honour `x-spendgate-defer` and features marked `batchable: true`."""
    flush_interval_s: float = Field(default=60.0, ge=0)
    """Deferred calls are gathered this long before they go out as one batch (the discount
    is per request, so waiting longer saves nothing; it only makes fewer, larger batches)."""
    max_batch_requests: int = Field(default=50_000, gt=0)
    """OpenAI's limit per batch file."""
    result_ttl_days: float = Field(default=7.0, gt=0)
    """How long a finished deferred call's answer can be fetched."""
    adopt_after_s: float = Field(default=900.0, gt=0)
    """A deferred call that made no progress this long (its replica died) is taken over by
    another replica, which then records it."""
    max_wait_s: float = Field(default=60.0, ge=0, le=600)
    """Longest `GET /v1/deferred/{id}?wait=N` holds the request waiting for the answer."""


class BatchesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    poll_interval_s: float = Field(default=30.0, gt=0)
    """How often the gateway asks providers about the batches it passed through (a client
    fetching a finished batch's status also records it at once)."""
    max_file_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    """Largest batch input file accepted (OpenAI's limit is 200 MB)."""
    stale_claim_s: float = Field(default=600.0, gt=0)
    """A batch being recorded by a replica that died is recorded again after this long
    (each result line keeps its request id, so nothing is counted twice)."""
    defer: DeferConfig = Field(default_factory=DeferConfig)
