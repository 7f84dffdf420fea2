"""Liveness and readiness probes (`/v0/health`, `/v0/ready`): no token needed, so load
balancers can poll them; `/v0/ready` details (ClickHouse, migrations, consumers) only for
an ADMIN token."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State

from redpoll.api.auth import optional_principal
from redpoll.api.state import app_state
from redpoll.errors import RedpollError

__all__ = ("HealthController",)


class HealthController(Controller):
    path = "/v0"

    @get("/health", sync_to_thread=False)
    def health(self) -> dict[str, str]:
        """Liveness: the process answers HTTP."""
        return {"status": "ok"}

    @get("/ready", sync_to_thread=True)
    def ready(self, request: Request[Any, Any, Any], state: State) -> Response[dict[str, Any]]:
        """Readiness: ClickHouse answers and every migration file is applied."""
        wiring = app_state(state)
        store = wiring.store
        detail: dict[str, Any] = {"clickhouse": "ok" if store.ping() else "unreachable"}
        if detail["clickhouse"] == "ok":
            try:
                with store.admin_lock:
                    problems = store.migrations().problems()
            except RedpollError as exc:
                problems = [exc.message]
            detail["migrations"] = {"ok": not problems, "problems": problems}
        for probe in wiring.readiness_probes:
            detail.update(probe())
        ok = detail["clickhouse"] == "ok" and detail["migrations"]["ok"]
        detail["status"] = "ready" if ok else "not ready"
        principal = optional_principal(request)
        if principal is None or not principal.is_admin:
            detail = {"status": detail["status"]}
        return Response(detail, status_code=200 if ok else 503)
