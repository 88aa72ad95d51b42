"""`BatchingWriter`: gets UsageEvents off the request path and into a store in batches.

`submit` only appends to a deque under a lock that is never held across I/O, so the
gateway's event loop never waits on the disk. One background thread drains the deque in
batches of up to `max_batch` (or whatever arrived within `flush_interval`). A failing store
does not lose events: the batch is kept and re-sent with capped exponential backoff, which
is safe because stores are idempotent per request_id. The only ways an event is not written
are counted and logged: the buffer overflowed (`dropped`), it arrived after `close()`
(`dropped`), or the event itself cannot be stored (`rejected`, found by bisecting the
batch so its neighbours still get written).

With a `Spool`, each accepted event is also appended to a local file before it enters the
buffer (one `write` syscall under the lock), so a process killed with events still queued
loses none of them: the next writer on that spool directory recovers and re-sends them
(`recovered`). `close(timeout)` then bounds shutdown: what the store did not take within
the timeout stays in the spool for the next start.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
from collections import deque
from typing import Any

from spendgate.ledger.event import InvalidEvent, UsageEvent
from spendgate.ledger.spool import Spool
from spendgate.ledger.store import LedgerStore

__all__ = ["BatchingWriter"]

log = logging.getLogger(__package__)

_UNSTORABLE = (InvalidEvent, TypeError, OverflowError)
"""Errors that belong to an event, not to the store: retrying the same event cannot help."""

_DROP_LOG_EVERY = 10.0
"""Seconds between overflow log lines, so a sustained overflow does not flood the log."""

_EXIT_TIMEOUT = 30.0
"""How long interpreter exit waits for a writer nobody closed."""


class BatchingWriter:
    """Background batch writer in front of a `LedgerStore`.

    `written + pending + dropped + rejected == submitted` at every `stats()` snapshot
    taken while no submit is in flight.
    """

    def __init__(
        self,
        store: LedgerStore,
        *,
        max_batch: int = 2000,
        flush_interval: float = 0.05,
        max_buffer: int = 100_000,
        retry_backoff: float = 0.05,
        max_backoff: float = 5.0,
        spool: Spool | None = None,
    ) -> None:
        if max_batch < 1 or max_buffer < 1:
            raise ValueError("max_batch and max_buffer must be at least 1")
        if flush_interval <= 0 or retry_backoff <= 0 or max_backoff < retry_backoff:
            raise ValueError("flush_interval and retry_backoff must be > 0, max_backoff >= it")
        self._store = store
        self._max_batch = max_batch
        self._flush_interval = flush_interval
        self._max_buffer = max_buffer
        self._retry_backoff = retry_backoff
        self._max_backoff = max_backoff

        self._buf: deque[UsageEvent] = deque()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._abort = threading.Event()

        self._submitted = 0
        self._accepted = 0
        self._dropped = 0
        self._written = 0
        self._rejected = 0
        self._write_errors = 0
        self._batches = 0
        self._flushers = 0
        self._closed = False
        self._running = True
        self._drop_logged_at = -math.inf
        self._spool = spool
        self._recovered = 0
        orphans: list[Any] = []
        if spool is not None:
            events, orphans = spool.take_orphans()
            for event in events:  # re-spooled into our own segment, then queued
                self.submit(event)
            self._recovered = len(events)
            spool.sync_all()
            spool.forget(orphans)  # safe now: the events are in our segment
            if events:
                log.warning(
                    "ledger: recovered %d unwritten event(s) from %d spool segment(s) in %s",
                    len(events),
                    len(orphans),
                    spool.dir,
                )

        self._thread = threading.Thread(
            target=self._run, name="spendgate-ledger-writer", daemon=True
        )
        self._thread.start()
        # Daemon thread so a forgotten writer cannot hang exit; this hook still flushes it.
        atexit.register(self._atexit)

    # -- hot path ----------------------------------------------------------------------

    def submit(self, event: UsageEvent) -> None:
        """Queue one event. Never blocks on I/O; safe from any thread or event loop."""
        wake = False
        drop_reason: str | None = None
        with self._lock:
            self._submitted += 1
            if self._closed:
                self._dropped += 1
                drop_reason = "writer is closed"
            elif len(self._buf) >= self._max_buffer:
                self._dropped += 1
                now = time.monotonic()
                if now - self._drop_logged_at >= _DROP_LOG_EVERY:
                    self._drop_logged_at = now
                    drop_reason = f"buffer full ({self._max_buffer} events pending)"
            else:
                if self._spool is not None:
                    self._spool.append(event)
                self._buf.append(event)
                self._accepted += 1
                wake = len(self._buf) == self._max_batch
            dropped = self._dropped
        if wake:
            self._wake.set()
        if drop_reason is not None:  # logged outside the lock: handlers may do I/O
            log.error(
                "ledger event %s dropped: %s; %d dropped so far",
                event.request_id,
                drop_reason,
                dropped,
            )

    @property
    def spooled(self) -> bool:
        """Whether unwritten events survive this process (a bounded shutdown is safe)."""
        return self._spool is not None

    # -- control -----------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every event submitted before this call is durably written (or
        rejected). False if `timeout` passed first."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() called from the writer thread")
        with self._lock:
            target = self._accepted
            self._flushers += 1
        self._wake.set()
        try:
            with self._done:
                return self._done.wait_for(
                    lambda: self._written + self._rejected >= target or not self._running,
                    timeout,
                ) and (self._written + self._rejected >= target)
        finally:
            with self._lock:
                self._flushers -= 1

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new events, write everything queued, stop the thread. With a store that
        keeps failing this waits for it (no loss) unless `timeout` is given; then it gives
        up, logs what stayed unwritten and returns False. The store is not closed: it is
        usually shared with readers."""
        with self._lock:
            self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        atexit.unregister(self._atexit)
        if self._thread.is_alive():
            self._abort.set()
            self._wake.set()
            # A store call in progress may hang (a half-open connection): with a spool the
            # events are safe on disk, so do not wait for it beyond a moment.
            self._thread.join(None if self._spool is None else 2.0)
        pending = self.stats()["pending"]
        if self._spool is not None:
            with self._lock:
                self._spool.close(keep=pending > 0)
        if pending:
            where = (
                f"; they stay in the spool {self._spool.dir} for the next start"
                if self._spool is not None
                else ""
            )
            log.error("ledger writer closed with %d events unwritten%s", pending, where)
        return pending == 0

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics."""
        with self._lock:
            return {
                "submitted": self._submitted,
                "written": self._written,
                "pending": self._accepted - self._written - self._rejected,
                "dropped": self._dropped,
                "rejected": self._rejected,
                "write_errors": self._write_errors,
                "batches": self._batches,
                "recovered": self._recovered,
            }

    def __enter__(self) -> BatchingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writer thread -----------------------------------------------------------------

    def _atexit(self) -> None:
        self.close(timeout=_EXIT_TIMEOUT)

    def _run(self) -> None:
        try:
            while not self._abort.is_set():
                self._wake.clear()
                with self._lock:
                    queued = len(self._buf)
                    closing = self._closed
                    hurry = self._flushers > 0
                if queued < self._max_batch and not closing and not hurry:
                    self._wake.wait(self._flush_interval)
                batch = self._take()
                if batch:
                    self._write(batch)
                    if self._spool is not None:
                        with self._lock:
                            self._spool.release(self._written + self._rejected)
                        self._spool.sync()  # outside the lock: submit never waits on it
                elif closing:
                    return  # closed before we looked, and nothing left: done
        except BaseException:
            log.exception("ledger writer thread died; events now pile up unwritten")
            raise
        finally:
            with self._done:
                self._running = False
                self._done.notify_all()

    def _take(self) -> list[UsageEvent]:
        # Only this thread pops, so the length can only grow under us.
        n = min(self._max_batch, len(self._buf))
        pop = self._buf.popleft
        return [pop() for _ in range(n)]

    def _write(self, batch: list[UsageEvent]) -> None:
        failures = 0
        while True:
            try:
                self._store.write_batch(batch)
            except _UNSTORABLE as exc:
                if len(batch) > 1:
                    mid = len(batch) // 2
                    self._write(batch[:mid])
                    self._write(batch[mid:])
                else:
                    self._reject(batch[0], exc)
                return
            except Exception:
                failures += 1
                with self._lock:
                    self._write_errors += 1
                delay = min(self._max_backoff, self._retry_backoff * 2 ** (failures - 1))
                if failures == 1:
                    log.exception(
                        "ledger write of %d events failed; retrying every ≤%.1fs",
                        len(batch),
                        self._max_backoff,
                    )
                else:
                    log.warning("ledger write failed again (attempt %d)", failures)
                if self._abort.wait(delay):
                    return
                continue
            with self._done:
                self._written += len(batch)
                self._batches += 1
                self._done.notify_all()
            if failures:
                log.warning("ledger write succeeded after %d failed attempts", failures)
            return

    def _reject(self, event: UsageEvent, exc: BaseException) -> None:
        log.error("ledger event %s cannot be stored and was discarded: %s", event.request_id, exc)
        with self._done:
            self._rejected += 1
            self._done.notify_all()
