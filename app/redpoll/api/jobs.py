"""`GET /v0/jobs[/<id>]` (Tinybird's Jobs API) and the lifespan of the job runner.

The jobs are those of `POST /v0/datasources` (import: append and replace), `.../delete`,
`.../truncate` and `POST /redpoll/v1/admin/erase` (ingest/jobs.py keeps the last 1000 in
memory). Who sees a job: ADMIN sees every one; a token holding `DATASOURCES:APPEND` on a
job's data source sees that job (an import it started, say), never an erasure's. Another
job answers 403 (existence is not revealed, as `/v0/datasources/<name>` does); an unknown
id 404.

`jobs_lifespan` (after the ingestion service) builds the runner and the mutations service
(ingest/mutations.py) whose operations are written to `datasources_ops_log` through the
call log (api/request_log.py), off the request path.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from litestar import Controller, Litestar, Request, get
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery

from redpoll.api.auth import Connection, authenticate, require
from redpoll.api.middleware import request_id
from redpoll.api.request_log import Call, CallLog
from redpoll.api.state import app_state
from redpoll.errors import NotFound, Unauthorized
from redpoll.ingest.jobs import Job, JobRunner
from redpoll.ingest.mutations import Mutations, Operation, Recorder, Who
from redpoll.tokens.scopes import DATASOURCES_APPEND, Principal

__all__ = ("JobsController", "job_body", "jobs_lifespan", "ops_recorder", "who")

#: a token that holds DATASOURCES:APPEND on any data source (or ADMIN) may list jobs
jobs_guard = require(DATASOURCES_APPEND)


def may_see(principal: Principal, job: Job) -> bool:
    if principal.is_admin:
        return True
    if job.admin_only or job.datasource is None:
        return False
    return principal.grant(DATASOURCES_APPEND, job.datasource) is not None


def job_body(job: Job, request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The job as Tinybird shows it, with its `job_url` on this server."""
    body = job.describe()
    body["job_url"] = str(request.base_url).rstrip("/") + f"/v0/jobs/{job.id}"
    return body


def who(connection: Connection) -> Who:
    """The request id and token name an operation is logged with."""
    return Who(request_id(connection.scope), authenticate(connection).name)


def ops_recorder(call_log: Callable[[], CallLog | None]) -> Recorder:
    """A recorder for `Mutations`: each operation becomes a `datasources_ops_log` row,
    queued on the call log `call_log()` returns (none: not recorded)."""

    def record(op: Operation) -> None:
        log = call_log()
        if log is None:
            return
        answer = {"error": op.error} if op.error else {"rows": op.rows}
        log.submit(
            Call(
                op.operation,
                op.started,
                op.elapsed,
                op.datasource,
                500 if op.error else 200,
                b"",
                b"",
                "",
                json.dumps(answer).encode(),
                0,
                op.who.request_id,
                op.who.token_name,
            )
        )

    return record


class JobsController(Controller):
    path = "/v0/jobs"
    guards = [jobs_guard]

    @get("/", sync_to_thread=False)
    def list_jobs(
        self,
        request: Request[Any, Any, Any],
        state: State,
        kind: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """The jobs this token may see, newest first (`kind=`, `status=` filter)."""
        principal = authenticate(request)
        return {
            "jobs": [
                job_body(job, request)
                for job in app_state(state).jobs.list()
                if may_see(principal, job)
                and (kind is None or job.kind == kind)
                and (status is None or job.status == status)
            ]
        }

    @get("/{job_id:str}", sync_to_thread=False)
    def job(
        self, request: Request[Any, Any, Any], state: State, job_id: FromPath[str]
    ) -> dict[str, Any]:
        found = app_state(state).jobs.get(job_id)
        principal = authenticate(request)
        if found is None:
            if principal.is_admin:
                raise NotFound(f"Job '{job_id[:64]}' not found")
            raise Unauthorized("this token may not see that job")
        if not may_see(principal, found):
            raise Unauthorized("this token may not see that job")
        return job_body(found, request)


@contextlib.asynccontextmanager
async def jobs_lifespan(app: Litestar) -> AsyncIterator[None]:
    """The job runner and the mutations service (after ingestion); on shutdown the
    queued jobs finish first."""
    wiring = app_state(app.state)
    runner = JobRunner()
    wiring.jobs = runner
    wiring.mutations = Mutations(
        wiring.ingest, wiring.store.new_client, record=ops_recorder(lambda: wiring.call_log)
    )
    try:
        yield
    finally:
        runner.close()
