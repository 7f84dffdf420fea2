"""`POST /redpoll/v1/admin/erase`: forget a user or an item (ADMIN; ADR 0021).

`?user_id=<id>` or `?item_id=<id>` (or the same key in a JSON or form body), exactly one.
Answered at once with a job (api/jobs.py) that removes the rows with that value from
every data source that has the column (`events`; `items` too for an item), their
quarantined lines and, for a user, logged calls that carried the id as a parameter
(`pipe_stats`); each data source's views are rebuilt under its write lock, so ingest may
go on meanwhile (ingest/mutations.py). Native, not Tinybird's (ADR 0007): Tinybird has
no erasure route. The job is visible to ADMIN only and does not show the id.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.datastructures import State

from redpoll.api.auth import admin_guard
from redpoll.api.datasources import read_form
from redpoll.api.jobs import job_body, who
from redpoll.api.state import app_state
from redpoll.errors import ParameterError
from redpoll.ingest.mutations import ERASE_KEYS

__all__ = ("EraseController",)


class EraseController(Controller):
    path = "/redpoll/v1/admin/erase"
    guards = [admin_guard]

    @post("", status_code=200)
    async def erase(self, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        """Remove a user's or an item's rows and their share of every view."""
        fields = {**(await read_form(request)), **dict(request.query_params)}
        given = {key: str(fields[key]) for key in ERASE_KEYS if fields.get(key)}
        if len(given) != 1:
            raise ParameterError(f"pass exactly one of {', '.join(ERASE_KEYS)}")
        ((key, value),) = given.items()
        wiring = app_state(state)
        mutations = wiring.mutations
        caller = who(request)
        job = wiring.jobs.submit(
            "erase",
            lambda: mutations.erase(key, value, caller),
            datasource=None,
            params={"key": key},
            admin_only=True,
        )
        return job_body(job, request)
