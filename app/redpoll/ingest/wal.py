"""A local write-ahead log: a request is durable once its record is fsync'd here.

Why: inserting into `events` runs every view, a fixed cost of the order of a hundred
milliseconds per INSERT on the full data (README, ingest figures). When each request
carries one event, waiting for that INSERT caps a server at a few hundred requests a
second however many clients send. With this log a request is answered once its rows
are on disk; the committer (`service.py`) inserts what the log holds in large groups and
then marks it applied, so the views lag the acknowledgement by about one INSERT.

Records are appended to segment files `<seq>.wal` (seq = the first record's number) as
`length (4 bytes) | crc32 (4 bytes) | payload`. Concurrent `append` calls share one
fsync (group commit): each writes its record, then one of them syncs for everyone whose
record was written before the sync began. A crash may leave a torn last record: `open`
drops every byte from the first record whose length or checksum does not hold (it was
never acknowledged). `applied` is a small file naming the last record whose rows are in
ClickHouse, replaced atomically (write, fsync, rename, fsync of the folder); segments
whose records are all applied are deleted.

Replaying a record twice is harmless for `events`: rows keep the `event_id`s assigned at
validation and the events writer stores each id once (`writer.py`).
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ("WriteAheadLog",)

_HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
_SUFFIX = ".wal"
_APPLIED = "applied"
#: most bytes one record may hold (a request body is capped far below: settings.py)
MAX_RECORD_BYTES = 1 << 30


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriteAheadLog:
    """Append-only, fsync'd, segmented; one instance per folder and process."""

    def __init__(self, directory: Path, segment_bytes: int = 64 << 20) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards the file, the counters and `_synced`
        self._synced_cond = threading.Condition(self._lock)
        self._syncing = False
        self._checkpoint_lock = threading.Lock()
        #: applied records above the checkpoint (a gap below them is not applied yet)
        self._done: set[int] = set()
        self.applied = self._read_applied()
        #: the first record number of every segment on disk, oldest first
        self._segments = self._scan()
        self._next = max(self.applied, self._last_seq()) + 1
        self._written = self._next - 1  # last record written (maybe not yet synced)
        self._synced = self._written  # last record known to be on disk
        self._file = self._open_segment(self._segments[-1] if self._segments else self._next)

    # -- appending -------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Write `payload` as the next record and return its number once it is on disk."""
        if len(payload) > MAX_RECORD_BYTES:
            raise ValueError(f"a log record holds at most {MAX_RECORD_BYTES} bytes")
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self._file.tell() >= self.segment_bytes:
                self._rotate()
            self._file.write(record)
            seq = self._next
            self._next += 1
            self._written = seq
            while self._synced < seq:
                if self._syncing:  # someone syncs: wait, then look again
                    self._synced_cond.wait()
                    continue
                self._syncing = True
                upto = self._written
                self._file.flush()
                handle = self._file.fileno()
                self._lock.release()
                try:
                    os.fsync(handle)  # outside the lock: others append meanwhile
                finally:
                    self._lock.acquire()
                    self._syncing = False
                self._synced = max(self._synced, upto)
                self._synced_cond.notify_all()
            return seq

    def _rotate(self) -> None:
        """Start a new segment (caller holds the lock; everything written is synced)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._synced = self._written
        self._file.close()
        self._file = self._open_segment(self._next)

    def _open_segment(self, first: int) -> io.BufferedWriter:
        path = self.directory / f"{first:020d}{_SUFFIX}"
        created = not path.exists()
        handle = open(path, "ab")  # noqa: SIM115 - kept open until rotated or closed
        if created:
            _fsync_dir(self.directory)
            self._segments.append(first)
        return handle

    # -- reading and applying --------------------------------------------------------

    def pending(self) -> Iterator[tuple[int, bytes]]:
        """Records not applied yet, in order (recovery at start; the committer's input)."""
        with self._lock:
            self._file.flush()
            segments = list(self._segments)
            last = self._written
        for first in segments:
            for seq, payload in self._read_segment(first):
                if self.applied < seq <= last:
                    yield seq, payload

    def mark_applied(self, seqs: Iterable[int]) -> None:
        """Record that the records `seqs` are in ClickHouse. The checkpoint advances over
        the applied records without a gap (requests may reach the committer in another
        order than their records were written); spent segments are deleted."""
        with self._lock:
            self._done.update(seqs)
            upto = self.applied
            while upto + 1 in self._done:
                upto += 1
                self._done.discard(upto)
        if upto == self.applied:
            return
        path = self.directory / _APPLIED
        tmp = path.with_suffix(".tmp")
        with self._checkpoint_lock:
            if upto <= self.applied:
                return
            with open(tmp, "w", encoding="ascii") as handle:
                handle.write(f"{upto}\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_dir(self.directory)
            self.applied = upto
        with self._lock:
            current = self._segments[-1]
            spent = [
                first
                for first, following in zip(self._segments, self._segments[1:], strict=False)
                if following - 1 <= upto and first != current
            ]
            for first in spent:
                (self.directory / f"{first:020d}{_SUFFIX}").unlink(missing_ok=True)
                self._segments.remove(first)

    @property
    def unapplied(self) -> int:
        """Records written and not yet applied."""
        with self._lock:
            return self._written - self.applied

    def close(self) -> None:
        with self._lock:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    # -- start-up --------------------------------------------------------------------

    def _read_applied(self) -> int:
        path = self.directory / _APPLIED
        try:
            return int(path.read_text(encoding="ascii").strip() or 0)
        except FileNotFoundError:
            return 0

    def _scan(self) -> list[int]:
        """The segments on disk, oldest first; a torn tail is cut off the last one."""
        firsts = sorted(int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        if firsts:
            self._truncate_torn(firsts[-1])
        return firsts

    def _last_seq(self) -> int:
        if not self._segments:
            return 0
        first = self._segments[-1]
        count = sum(1 for _ in self._read_segment(first))
        return first + count - 1

    def _truncate_torn(self, first: int) -> None:
        path = self.directory / f"{first:020d}{_SUFFIX}"
        good = 0
        for _, _, end in self._records(path):
            good = end
        if path.stat().st_size != good:
            with open(path, "r+b") as handle:
                handle.truncate(good)
                handle.flush()
                os.fsync(handle.fileno())

    def _read_segment(self, first: int) -> Iterator[tuple[int, bytes]]:
        path = self.directory / f"{first:020d}{_SUFFIX}"
        for index, payload, _ in self._records(path):
            yield first + index, payload

    @staticmethod
    def _records(path: Path) -> Iterator[tuple[int, bytes, int]]:
        """(index, payload, end offset) of every whole, intact record of `path`."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        offset = index = 0
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            end = start + length
            if length > MAX_RECORD_BYTES or end > len(data):
                return
            payload = data[start:end]
            if zlib.crc32(payload) != crc:
                return
            yield index, payload, end
            offset = end
            index += 1
