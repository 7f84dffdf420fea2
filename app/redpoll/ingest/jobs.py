"""Jobs: long data operations run off the request, reported as Tinybird's job objects.

One worker thread runs the queued jobs in order (a replace, a delete and an erasure each
rebuild views under a data source's write lock: running them one at a time keeps two of
them from waiting on each other's rebuild). Jobs are kept in memory, the newest
`capacity` (default 1000); older finished ones are forgotten, so `GET /v0/jobs/<id>`
answers 404 for them, and nothing survives a restart (the operation's outcome does: it is
in `datasources_ops_log`). Status: `waiting` -> `working` -> `done` | `error`, as
Tinybird's. An operation that finishes within its request (a file append, a truncate) is
recorded here as a job that is already done, so both kinds are looked up the same way.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any

from redpoll.clickhouse.client import DatabaseError
from redpoll.clickhouse.errors import DbErrorKind, classify, public_message
from redpoll.errors import RedpollError

__all__ = ("Job", "JobRunner")

log = logging.getLogger("redpoll.ingest.jobs")

WAITING, WORKING, DONE, ERROR = "waiting", "working", "done", "error"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass
class Job:
    """One operation: what it is, its state and, once finished, its result or error."""

    id: str
    kind: str  # "import", "delete_data", "truncate", "erase"
    datasource: str | None
    #: what the job was asked to do (mode, delete_condition, url...), shown as given
    params: dict[str, Any]
    #: only ADMIN sees it (an erasure names a user); else tokens that may append to
    #: `datasource` see it too
    admin_only: bool = False
    status: str = WAITING
    created_at: dt.datetime = dataclasses.field(default_factory=_now)
    started_at: dt.datetime | None = None
    updated_at: dt.datetime = dataclasses.field(default_factory=_now)
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in (DONE, ERROR)

    def describe(self) -> dict[str, Any]:
        """Tinybird's job fields (the API adds `job_url`)."""
        body: dict[str, Any] = {
            "id": self.id,
            "job_id": self.id,
            "kind": self.kind,
            "status": self.status,
            "created_at": _stamp(self.created_at),
            "started_at": _stamp(self.started_at),
            "updated_at": _stamp(self.updated_at),
            "is_cancellable": False,
            **self.params,
            **self.result,
        }
        if self.datasource is not None:
            body["datasource"] = {"id": self.datasource, "name": self.datasource}
        if self.error is not None:
            body["error"] = self.error
        return body


def _stamp(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")


class JobRunner:
    """The queue, the worker thread and the last `capacity` jobs."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[Job, Callable[[], dict[str, Any]]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="jobs", daemon=True)
        self._thread.start()

    def submit(
        self,
        kind: str,
        run: Callable[[], dict[str, Any]],
        *,
        datasource: str | None,
        params: dict[str, Any] | None = None,
        admin_only: bool = False,
    ) -> Job:
        """Queue `run` (returns the job's result fields); the job is `waiting`."""
        job = self._new(kind, datasource, params, admin_only)
        self._queue.put((job, run))
        return job

    def record(
        self,
        kind: str,
        result: dict[str, Any],
        *,
        datasource: str | None,
        params: dict[str, Any] | None = None,
        admin_only: bool = False,
    ) -> Job:
        """A job for an operation that already finished in its request."""
        job = self._new(kind, datasource, params, admin_only)
        job.started_at = job.created_at
        self._finish(job, DONE, result=result)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))

    def close(self, timeout: float = 600) -> None:
        """Finish the queued jobs, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _new(
        self, kind: str, datasource: str | None, params: dict[str, Any] | None, admin_only: bool
    ) -> Job:
        job = Job(uuid.uuid4().hex, kind, datasource, dict(params or {}), admin_only)
        with self._lock:
            self._jobs[job.id] = job
            self._evict()
        return job

    def _evict(self) -> None:
        """Forget the oldest finished jobs beyond `capacity` (caller holds `_lock`)."""
        excess = len(self._jobs) - self.capacity
        if excess <= 0:
            return
        for job_id in [i for i, j in self._jobs.items() if j.finished][:excess]:
            del self._jobs[job_id]

    def _finish(
        self, job: Job, status: str, *, result: dict[str, Any] | None = None, error: str = ""
    ) -> None:
        with self._lock:
            job.result = dict(result or {})
            job.error = error or None
            job.updated_at = _now()
            job.status = status

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, run = item
            with self._lock:
                job.status = WORKING
                job.started_at = job.updated_at = _now()
            try:
                result = run()
            except RedpollError as exc:
                self._finish(job, ERROR, error=exc.message)
            except DatabaseError as exc:
                caller = classify(exc) in (DbErrorKind.CALLER, DbErrorKind.LIMIT)
                message = public_message(exc) if caller else f"internal error (job {job.id})"
                log.log(logging.INFO if caller else logging.ERROR, "job %s: %s", job.id, exc)
                self._finish(job, ERROR, error=message)
            except Exception:
                log.exception("job %s (%s) failed", job.id, job.kind)
                self._finish(job, ERROR, error=f"internal error (job {job.id})")
            else:
                self._finish(job, DONE, result=result)
