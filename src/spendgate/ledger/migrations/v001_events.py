"""v1: `usage_events`, range-partitioned by UTC day; partitions are made on demand.

Column types mirror the SQLite store: money as BIGINT nanos (exact sums), flags as
SMALLINT (0/1, the same values `UsageEvent.to_row` produces), JSON as JSONB. The primary
key must contain the partition key, so it is (request_id, day); since `day` is derived from
the event's own `ts`, a re-sent event always lands on the same key and `ON CONFLICT DO
NOTHING` keeps writes idempotent.
"""

from __future__ import annotations

VERSION = 1
DESCRIPTION = "usage_events partitioned by day"

_COLUMNS = """
    id                    BIGSERIAL,
    request_id            TEXT NOT NULL,
    ts                    DOUBLE PRECISION NOT NULL,
    day                   DATE NOT NULL,
    endpoint              TEXT NOT NULL,
    api                   TEXT NOT NULL,
    feature               TEXT,
    use_case              TEXT,
    team                  TEXT,
    tenant                TEXT,
    "user"                TEXT,
    key_id                TEXT,
    requested_model       TEXT NOT NULL,
    served_model          TEXT,
    provider              TEXT,
    deployment            TEXT,
    input_tokens          BIGINT NOT NULL DEFAULT 0,
    output_tokens         BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens     BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens    BIGINT NOT NULL DEFAULT 0,
    cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens      BIGINT NOT NULL DEFAULT 0,
    usage_estimated       SMALLINT NOT NULL DEFAULT 0,
    cost_nanos            BIGINT,
    baseline_nanos        BIGINT,
    savings               JSONB,
    savings_nanos         BIGINT NOT NULL DEFAULT 0,
    cost_estimated        SMALLINT NOT NULL DEFAULT 0,
    price_version         TEXT,
    cache                 TEXT,
    route                 JSONB,
    attempts              JSONB,
    stream                SMALLINT NOT NULL DEFAULT 0,
    status                INTEGER NOT NULL,
    error_type            TEXT,
    latency_ms            DOUBLE PRECISION NOT NULL,
    ttfb_ms               DOUBLE PRECISION,
    client_disconnected   SMALLINT NOT NULL DEFAULT 0,
    prompt_fingerprint    TEXT,
    extra                 JSONB,
    PRIMARY KEY (request_id, day)
"""


def statements(schema: str) -> list[str]:
    t = f"{schema}.usage_events"
    return [
        f"CREATE TABLE {t} ({_COLUMNS}) PARTITION BY RANGE (day)",
        # Indexes on the parent are created on every partition, present and future.
        f"CREATE INDEX usage_events_id ON {t} (id)",
        f"CREATE INDEX usage_events_ts ON {t} (ts)",
        f"CREATE INDEX usage_events_feature_ts ON {t} (feature, ts)",
        f"CREATE INDEX usage_events_tenant_ts ON {t} (tenant, ts)",
    ]
