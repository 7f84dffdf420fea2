"""The console's pages, who may see each, and the static files.

A page is a shell without data (served to anyone: it holds only the layout); its content
is a fragment (console/fragments.py) that the browser fetches with htmx, sending the
token the user signed in with from `sessionStorage` as `Authorization: Bearer`. So the
API's own guards decide what a token sees, with no cookie and no change to
api/auth.py (docs/adr/0018-console-server-rendered-with-htmx.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Controller, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath
from litestar.static_files import create_static_files_router

from redpoll.api.auth import Connection, authenticate
from redpoll.api.security import is_preflight
from redpoll.errors import Unauthorized
from redpoll.tokens.scopes import DATASOURCES_APPEND, DATASOURCES_READ, PIPES_READ, Principal

__all__ = (
    "PAGES",
    "ConsolePages",
    "Page",
    "html",
    "page_guard",
    "render",
    "signed_in_guard",
    "static_router",
)

STATIC_DIR = Path(__file__).parent / "static"
#: Scripts, styles and images come from this origin only; no inline script or style.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

_templates = Environment(
    loader=PackageLoader("redpoll.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context: Any) -> str:
    return _templates.get_template(template).render(**context)


def html(body: str, status_code: int = 200) -> Response[str]:
    return Response(
        body,
        status_code=status_code,
        media_type="text/html",
        headers={"content-security-policy": CSP},
    )


def _any_datasource(principal: Principal) -> bool:
    return any(principal.grant(s) is not None for s in (DATASOURCES_READ, DATASOURCES_APPEND))


@dataclasses.dataclass(frozen=True)
class Page:
    slug: str
    title: str
    #: who may see it; the same test guards its fragments (`page_guard`)
    allows: Callable[[Principal], bool]
    #: the scope it needs, as the 403 page says
    needs: str
    #: the endpoint the page is built on: without it the page is left out of the menu
    endpoint: str | None = None


def _endpoint_page(slug: str, title: str, endpoint: str) -> Page:
    """A page built on one endpoint: shown to tokens that may read that pipe."""
    return Page(
        slug,
        title,
        lambda p: p.grant(PIPES_READ, endpoint) is not None,
        f"{PIPES_READ}:{endpoint}",
        endpoint=endpoint,
    )


PAGES: tuple[Page, ...] = (
    Page("endpoints", "Endpoints", lambda p: p.grant(PIPES_READ) is not None, PIPES_READ),
    Page("data", "Data", _any_datasource, f"{DATASOURCES_READ} or {DATASOURCES_APPEND}"),
    _endpoint_page("trending", "Trending", "trending"),
    _endpoint_page("recommendations", "Recommendations", "recommendation_stats"),
    Page("evaluation", "Evaluation", lambda p: p.is_admin, "ADMIN"),
    Page("requests", "Requests", lambda p: p.is_admin, "ADMIN"),
)
_BY_SLUG = {page.slug: page for page in PAGES}


def page_guard(slug: str) -> Callable[[Connection, BaseRouteHandler], None]:
    """A guard that lets through the tokens the page `slug` allows (403 otherwise)."""
    page = _BY_SLUG[slug]

    def guard(connection: Connection, _: BaseRouteHandler) -> None:
        if is_preflight(connection):
            return
        if not page.allows(authenticate(connection)):
            raise Unauthorized(
                f"this token may not see the {page.title} page: it needs {page.needs}"
            )

    guard.__name__ = f"console_{slug}_guard"
    return guard


def signed_in_guard(connection: Connection, _: BaseRouteHandler) -> None:
    """Any valid token (the navigation then shows only the pages it may see)."""
    if not is_preflight(connection):
        authenticate(connection)


class ConsolePages(Controller):
    """Page shells: public, as they carry no data (the fragments they load are guarded)."""

    path = "/ui"
    include_in_schema = False

    @get("/", sync_to_thread=False)
    def sign_in(self) -> Response[str]:
        return html(render("signin.html", pages=PAGES))

    @get("/{slug:str}", sync_to_thread=False)
    def page(self, slug: FromPath[str]) -> Response[str]:
        page = _BY_SLUG.get(slug)
        if page is None:
            return html(render("notfound.html", pages=PAGES), status_code=404)
        return html(render("page.html", page=page, pages=PAGES))


static_router = create_static_files_router(
    path="/ui/static",
    directories=[STATIC_DIR],
    cache_control=CacheControlHeader(max_age=3600),
    include_in_schema=False,
    name="console_static",
)
