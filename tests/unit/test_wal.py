"""The write-ahead log (app/redpoll/ingest/wal.py): numbering, torn tails, checkpoints,
segments, concurrent appends, and durability across `kill -9`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from redpoll.ingest.wal import WriteAheadLog


def _payloads(log: WriteAheadLog) -> list[tuple[int, bytes]]:
    return list(log.pending())


def test_records_keep_their_numbers_across_reopen(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    assert [log.append(f"r{i}".encode()) for i in range(3)] == [1, 2, 3]
    log.close()
    log = WriteAheadLog(tmp_path)
    assert _payloads(log) == [(1, b"r0"), (2, b"r1"), (3, b"r2")]
    assert log.append(b"r3") == 4
    log.close()


def test_a_torn_last_record_is_dropped_and_its_number_reused(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    for i in range(3):
        log.append(b"x" * 100 + bytes([i]))
    log.close()
    (segment,) = tmp_path.glob("*.wal")
    size = segment.stat().st_size
    with open(segment, "r+b") as handle:  # a crash in the middle of the third write
        handle.truncate(size - 30)
    log = WriteAheadLog(tmp_path)
    assert [seq for seq, _ in _payloads(log)] == [1, 2]
    assert log.append(b"again") == 3
    log.close()
    assert [p for _, p in _payloads(WriteAheadLog(tmp_path))][-1] == b"again"


def test_a_corrupted_record_ends_the_log(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    for i in range(3):
        log.append(bytes([i]) * 50)
    log.close()
    (segment,) = tmp_path.glob("*.wal")
    data = bytearray(segment.read_bytes())
    data[70] ^= 0xFF  # inside the second record's payload
    segment.write_bytes(bytes(data))
    assert [seq for seq, _ in _payloads(WriteAheadLog(tmp_path))] == [1]


def test_the_checkpoint_advances_only_over_applied_records_without_a_gap(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path)
    for i in range(5):
        log.append(bytes([i]))
    log.mark_applied([2, 3])
    assert log.applied == 0 and log.unapplied == 5
    log.mark_applied([1])
    assert log.applied == 3
    log.close()
    reopened = WriteAheadLog(tmp_path)
    assert [seq for seq, _ in _payloads(reopened)] == [4, 5]
    assert reopened.append(b"next") == 6


def test_spent_segments_are_deleted_and_numbering_survives(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, segment_bytes=64)
    seqs = [log.append(b"y" * 40) for _ in range(20)]
    assert len(list(tmp_path.glob("*.wal"))) > 5
    log.mark_applied(seqs[:-1])
    assert len(list(tmp_path.glob("*.wal"))) <= 2
    assert [seq for seq, _ in _payloads(log)] == [20]
    log.mark_applied(seqs[-1:])
    log.close()
    reopened = WriteAheadLog(tmp_path, segment_bytes=64)
    assert _payloads(reopened) == []
    assert reopened.append(b"z") == 21


def test_concurrent_appends_get_distinct_numbers_and_all_are_kept(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, segment_bytes=4096)
    got: list[int] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        for i in range(150):
            seq = log.append(f"{k}:{i}".encode())
            with lock:
                got.append(seq)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 1201))
    log.close()
    records = dict(_payloads(WriteAheadLog(tmp_path, segment_bytes=4096)))
    assert sorted(records.values()) == sorted(
        f"{k}:{i}".encode() for k in range(8) for i in range(150)
    )


_WRITER = """
import sys
from pathlib import Path
from redpoll.ingest.wal import WriteAheadLog
log = WriteAheadLog(Path(sys.argv[1]), segment_bytes=2048)
i = 0
while True:
    seq = log.append(b"event-%d" % i)
    print(seq, flush=True)
    i += 1
"""


def test_every_acknowledged_record_survives_kill_9(tmp_path: Path) -> None:
    """A record whose `append` returned is read back after the process is killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acknowledged = []
    for line in proc.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) >= 300:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    records = dict(_payloads(WriteAheadLog(tmp_path, segment_bytes=2048)))
    assert set(acknowledged) <= set(records)
    assert all(records[seq] == b"event-%d" % (seq - 1) for seq in acknowledged)
