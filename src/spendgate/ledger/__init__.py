"""The usage ledger: one `UsageEvent` per call, stored in batches, queried for spend reports.

Wiring: `store = open_ledger(url)`, `writer = BatchingWriter(store)`, `writer.submit(event)`
on the hot path (no I/O), and on shutdown `writer.close()` (writes everything queued) then
`store.close()`. Reports read the same store from any thread.
"""

from spendgate.ledger.backends import open_ledger
from spendgate.ledger.event import COLUMNS, InvalidEvent, UsageEvent, utc_day
from spendgate.ledger.report import FORMATS, csv_text, parse_when, render_report, report_command
from spendgate.ledger.spend import DIMENSIONS, NONE_LABEL, SpendRow, check_dimensions, total
from spendgate.ledger.sqlite import SCHEMA_VERSION, SQLiteLedger
from spendgate.ledger.store import LedgerStore
from spendgate.ledger.writer import BatchingWriter

__all__ = [
    "COLUMNS",
    "DIMENSIONS",
    "FORMATS",
    "NONE_LABEL",
    "SCHEMA_VERSION",
    "BatchingWriter",
    "InvalidEvent",
    "LedgerStore",
    "SQLiteLedger",
    "SpendRow",
    "UsageEvent",
    "check_dimensions",
    "csv_text",
    "open_ledger",
    "parse_when",
    "render_report",
    "report_command",
    "total",
    "utc_day",
]
