"""`Spool`: an append-only file of ledger events, so events the writer has not yet stored
survive the process (SIGKILL, an OOM kill, a shutdown that gave up on a store that is down).

Every event is appended to the spool (one JSON line, one `write` syscall, so it is in the
kernel's page cache and survives the process) *before* it enters the writer's buffer. The
writer thread tells the spool how many events are durably stored; a segment whose events
are all stored is deleted. At the next start, segments left by a process that is gone are
read back and handed to the new writer again: stores are idempotent per request id, so an
event that was stored *and* spooled is not counted twice.

Segments are per process (`<pid>-<start ns>-<n>.spool`) and held with an exclusive `flock`,
so several processes may share one spool directory: a starting process recovers only the
segments nobody holds, i.e. those of processes that died.

What can still be lost: a request still in flight when the process died (its event was
never created), and, on a machine crash (not a process crash), the events appended since
the writer's last `fsync` of the spool (at most one flush interval).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from spendgate.ledger.event import UsageEvent, _json_default
from spendgate.process_files import hold, if_orphaned

__all__ = ["Spool", "default_spool_dir", "open_spool"]

log = logging.getLogger(__name__)

SEGMENT_BYTES = 4 * 1024 * 1024
"""A segment is closed for appends past this size (deleted once its events are stored)."""
ROTATE_IDLE_BYTES = 256 * 1024
"""When every spooled event is stored, a segment at least this big is recycled at once."""


def default_spool_dir(ledger_url: str) -> Path | None:
    """Where `ledger.spool: auto` puts the spool: beside a SQLite ledger file
    (`<file>.spool/`); for a PostgreSQL ledger, under the user's state directory, one
    folder per ledger URL; none for an in-memory ledger."""
    scheme, sep, rest = ledger_url.partition("://")
    if not sep:
        return None if ledger_url == ":memory:" else Path(ledger_url + ".spool")
    if scheme.lower() == "sqlite":
        if rest in ("", "/", "/:memory:"):
            return None
        return Path(rest[1:] + ".spool")
    import hashlib

    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    digest = hashlib.blake2b(ledger_url.encode(), digest_size=6).hexdigest()
    return Path(state) / "spendgate" / f"spool-{digest}"


def open_spool(setting: str, ledger_url: str) -> Spool | None:
    """The spool `ledger.spool` names: `auto` (see `default_spool_dir`), `off`, or a path."""
    if setting == "off":
        return None
    directory = default_spool_dir(ledger_url) if setting == "auto" else Path(setting)
    return None if directory is None else Spool(directory)


@dataclass
class _Segment:
    path: Path
    fd: int
    size: int = 0
    end: int = 0
    """Sequence number one past the last event appended to it."""


class Spool:
    """Not thread-safe by itself: the `BatchingWriter` calls `append` and `release` under
    its own lock, so appends and the buffer stay in the same order."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._tag = f"{os.getpid()}-{time.time_ns()}"
        self._n = 0
        self._seq = 0
        self._released = 0
        self._segments: deque[_Segment] = deque()
        self._current = self._open_segment()
        self._dirty = False
        self.errors = 0

    # -- appending (under the writer's lock) ---------------------------------------------

    def append(self, event: UsageEvent) -> bool:
        """Write one event; False when it could not be spooled (it is still buffered)."""
        try:
            line = orjson.dumps(event, default=_json_default) + b"\n"
            seg = self._current
            if seg.size >= SEGMENT_BYTES:
                seg = self._current = self._open_segment()
            written = os.write(seg.fd, line)
            if written != len(line):  # a short write (disk full): finish it or fail
                os.write(seg.fd, line[written:])
        except (OSError, TypeError) as exc:
            self._seq += 1  # positions stay aligned with the writer's accepted count
            self._current.end = self._seq
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.error("ledger spool %s: cannot spool an event (%s); %d so far",
                          self.dir, exc, self.errors)  # fmt: skip
            return False
        seg.size += len(line)
        self._seq += 1
        seg.end = self._seq
        self._dirty = True
        return True

    def release(self, stored: int) -> None:
        """`stored` events (in append order) are in the store: drop segments that hold only
        those, and recycle the current one when everything is stored."""
        self._released = stored
        while len(self._segments) > 1 and self._segments[0].end <= stored:
            self._drop(self._segments.popleft())
        cur = self._current
        if stored >= self._seq and cur.size >= ROTATE_IDLE_BYTES:
            self._current = self._open_segment()
            self._segments.remove(cur)
            self._drop(cur)

    def sync(self) -> None:
        """fsync the segment being appended to (from the writer thread, once per cycle)."""
        if self._dirty:
            self._dirty = False
            with contextlib.suppress(OSError):
                os.fsync(self._current.fd)

    def close(self, *, keep: bool) -> None:
        """Close every segment; delete them unless `keep` (events left unstored)."""
        for seg in list(self._segments):
            if keep and seg.end > self._released:
                with contextlib.suppress(OSError):
                    os.fsync(seg.fd)
                os.close(seg.fd)  # closing releases the flock: the next start recovers it
            else:
                self._drop(seg)
        self._segments.clear()

    # -- recovery --------------------------------------------------------------------------

    def take_orphans(self) -> tuple[list[UsageEvent], list[Path]]:
        """Events in segments left by processes that are gone, and those segments' paths
        (delete them with `forget` once the events are safe elsewhere). A torn last line
        (a crash mid-write) is skipped."""
        events: list[UsageEvent] = []
        paths: list[Path] = []
        ours = {seg.path for seg in self._segments}
        for path in sorted(self.dir.glob("*.spool")):
            if path in ours:
                continue
            with if_orphaned(path) as fd:
                if fd is None:
                    continue  # a live process holds it
                with os.fdopen(os.dup(fd), "rb") as f:
                    data = f.read()
            bad = 0
            for line in data.split(b"\n"):
                if not line:
                    continue
                try:
                    events.append(UsageEvent(**orjson.loads(line)))
                except (orjson.JSONDecodeError, TypeError):
                    bad += 1
            if bad:
                log.warning("ledger spool %s: %d unreadable line(s) skipped", path, bad)
            paths.append(path)
        return events, paths

    def sync_all(self) -> None:
        for seg in self._segments:
            with contextlib.suppress(OSError):
                os.fsync(seg.fd)

    @staticmethod
    def forget(paths: list[Path]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def stats(self) -> dict[str, Any]:
        return {
            "segments": len(self._segments),
            "bytes": sum(s.size for s in self._segments),
            "errors": self.errors,
        }

    # -- internals -------------------------------------------------------------------------

    def _open_segment(self) -> _Segment:
        self._n += 1
        path = self.dir / f"{self._tag}-{self._n:06d}.spool"
        fd = hold(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC)
        seg = _Segment(path, fd, end=self._seq)
        self._segments.append(seg)
        return seg

    @staticmethod
    def _drop(seg: _Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()
        with contextlib.suppress(OSError):
            os.close(seg.fd)
