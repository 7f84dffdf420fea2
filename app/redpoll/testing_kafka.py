"""A real Kafka-protocol broker for tests and benchmarks, in its own process.

No Kafka or Redpanda can be installed on the project's machines, so tests use
librdkafka's built-in mock cluster, the one bundled in the `confluent-kafka` wheel. It
speaks the Kafka protocol (produce, fetch, consumer groups, offset commits) on a real TCP
port. It runs in a separate process (`python -m redpoll.testing_kafka`) so that the test
process never loads that librdkafka next to chDB, and so it can be killed.

The child prints `BOOTSTRAP host:port` once listening, then obeys one command per stdin
line and answers `ok` or `error <text>`:

    topic NAME PARTITIONS     create a topic
    down BROKER_ID            disconnect a broker and refuse new connections (outage)
    up BROKER_ID              accept connections again
    rtt BROKER_ID MS          delay every response of a broker by MS (0: none)
    quit

`MockKafka` wraps it: `with MockKafka() as kafka: kafka.bootstrap ...`.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

__all__ = ("MockKafka",)


def _load_librdkafka() -> ctypes.CDLL:
    spec = importlib.util.find_spec("confluent_kafka")  # locate the wheel, do not import it
    if spec is None or spec.origin is None:
        raise RuntimeError("confluent-kafka is not installed (pip install redpoll[kafka])")
    site = Path(spec.origin).resolve().parent.parent
    candidates = sorted(glob.glob(str(site / "confluent_kafka.libs" / "librdkafka*.so*")))
    if not candidates:
        raise RuntimeError(f"no bundled librdkafka under {site}/confluent_kafka.libs")
    lib = ctypes.CDLL(candidates[0])
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
    lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
    lib.rd_kafka_mock_topic_create.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    for name in ("rd_kafka_mock_broker_set_down", "rd_kafka_mock_broker_set_up"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.rd_kafka_mock_broker_set_rtt.restype = ctypes.c_int
    lib.rd_kafka_mock_broker_set_rtt.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int]
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms.restype = None
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.rd_kafka_err2str.restype = ctypes.c_char_p
    lib.rd_kafka_err2str.argtypes = [ctypes.c_int]
    return lib


def _serve(brokers: int) -> None:
    """The child process: start the mock cluster, then obey stdin commands."""
    lib = _load_librdkafka()
    errbuf = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    lib.rd_kafka_conf_set(conf, b"log_level", b"0", errbuf, len(errbuf))
    rk = lib.rd_kafka_new(0, conf, errbuf, len(errbuf))  # RD_KAFKA_PRODUCER
    if not rk:
        raise SystemExit(f"rd_kafka_new failed: {errbuf.value.decode()}")
    cluster = lib.rd_kafka_mock_cluster_new(rk, brokers)
    if not cluster:
        raise SystemExit("rd_kafka_mock_cluster_new failed")
    # a new consumer group forms at once instead of after the default 3 s
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0)
    print("BOOTSTRAP", lib.rd_kafka_mock_cluster_bootstraps(cluster).decode(), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        err = 0
        if words[0] == "quit":
            break
        if words[0] == "topic":
            err = lib.rd_kafka_mock_topic_create(cluster, words[1].encode(), int(words[2]), 1)
        elif words[0] == "down":
            err = lib.rd_kafka_mock_broker_set_down(cluster, int(words[1]))
        elif words[0] == "up":
            err = lib.rd_kafka_mock_broker_set_up(cluster, int(words[1]))
        elif words[0] == "rtt":
            err = lib.rd_kafka_mock_broker_set_rtt(cluster, int(words[1]), int(words[2]))
        else:
            print(f"error unknown command {words[0]!r}", flush=True)
            continue
        print("ok" if err == 0 else f"error {lib.rd_kafka_err2str(err).decode()}", flush=True)
    os._exit(0)  # skip librdkafka teardown: the process is going away anyway


class MockKafka:
    """A mock Kafka cluster in a child process; `bootstrap` is its `host:port` list."""

    def __init__(self, brokers: int = 1) -> None:
        self.brokers = brokers
        self.bootstrap = ""
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def start(self) -> MockKafka:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "redpoll.testing_kafka", "--brokers", str(self.brokers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self._process.stdout is not None
        first = self._process.stdout.readline().split()
        if len(first) != 2 or first[0] != "BOOTSTRAP":
            self.stop()
            raise RuntimeError(f"mock Kafka did not start (said {first!r})")
        self.bootstrap = first[1]
        return self

    def _command(self, text: str) -> None:
        assert self._process is not None and self._process.stdin and self._process.stdout
        with self._lock:
            self._process.stdin.write(text + "\n")
            self._process.stdin.flush()
            answer = self._process.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"mock Kafka: {text!r} -> {answer!r}")

    def create_topic(self, name: str, partitions: int = 4) -> None:
        self._command(f"topic {name} {partitions}")

    def broker_down(self, broker_id: int = 1) -> None:
        """Simulate an outage: connections are closed and new ones refused."""
        self._command(f"down {broker_id}")

    def broker_up(self, broker_id: int = 1) -> None:
        self._command(f"up {broker_id}")

    def broker_rtt(self, rtt_ms: int, broker_id: int = 1) -> None:
        """Delay every response of a broker by `rtt_ms` (a slow or overloaded broker)."""
        self._command(f"rtt {broker_id} {rtt_ms}")

    def all_down(self) -> None:
        for broker in range(1, self.brokers + 1):
            self.broker_down(broker)

    def all_up(self) -> None:
        for broker in range(1, self.brokers + 1):
            self.broker_up(broker)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.write("quit\n")
                process.stdin.flush()
                process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait(5)

    def __enter__(self) -> MockKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", type=int, default=1)
    _serve(parser.parse_args().brokers)
