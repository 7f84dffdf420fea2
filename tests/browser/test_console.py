"""The web console (`/ui`) in real headless Chromium, driven by Selenium.

One `redpoll serve` subprocess on a small shop (its items, orders, impressions and
clicks ingested through the Events API) and one browser for the module. Every page is
opened with a read token (the admin-only ones with the admin token too); each page's
screenshot goes to tests/browser/artifacts/, and its weight (all assets, from the
browser's resource timing) and first paint are printed. The test skips, saying why,
where Chromium or its driver is not installed (`.ci/run` installs them).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from redpoll.testing import RunningServer, copy_project, run_server
from tests.support.paths import REPO_ROOT

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)",
)

ARTIFACTS = Path(__file__).parent / "artifacts"
READ_PAGES = ("endpoints", "data", "trending", "recommendations")
ADMIN_PAGES = ("evaluation", "requests")
MAX_PAGE_BYTES = 300 * 1024
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
ITEMS = [
    {
        "item_id": f"SKU{i:03d}",
        "title": f"Item {i} <b>mug</b>",  # markup in data must show as text
        "category": ("kitchen", "garden", "toys")[i % 3],
        "brand": "acme",
        "price": 2.5 + i,
    }
    for i in range(30)
]


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _shop_events() -> list[dict[str, Any]]:
    """Orders of 2-4 items over the last two days, views, and impressions and clicks
    of two variants of `for_user` (b clicked about twice as often as a)."""
    rnd = random.Random(7)
    events: list[dict[str, Any]] = []
    for order in range(120):
        ts = _iso(NOW - dt.timedelta(minutes=rnd.randrange(48 * 60)))
        for item in rnd.sample(ITEMS[:12], rnd.randint(2, 4)):
            events.append(
                {
                    "event_id": f"p{order}-{item['item_id']}",
                    "ts": ts,
                    "user_id": f"u{order % 25}",
                    "item_id": item["item_id"],
                    "event_type": "purchase",
                    "order_id": f"o{order}",
                }
            )
    for n in range(300):
        variant = "ab"[n % 2]
        ts = _iso(NOW - dt.timedelta(minutes=rnd.randrange(3 * 24 * 60)))
        common = {"user_id": f"u{n % 25}", "item_id": f"SKU{n % 30:03d}", "ts": ts}
        rec = {"rec_id": f"r{n}", "source": f"for_user:{variant}"}
        events.append({"event_id": f"imp{n}", "event_type": "impression", **common, **rec})
        if rnd.random() < (0.1 if variant == "a" else 0.2):
            events.append({"event_id": f"clk{n}", "event_type": "click", **common, **rec})
    return events


def _ingest(http: httpx.Client, name: str, rows: list[dict[str, Any]] | list[str]) -> Any:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    response = http.post(
        "/v0/events", params={"name": name, "wait": "true"}, content="\n".join(lines)
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    project = copy_project(
        REPO_ROOT,
        tmp_path_factory.mktemp("console") / "shop",
        ("sql", "materialized_views", "migrations", "endpoints"),
    )
    shutil.copytree(REPO_ROOT / "docs" / "eval", project / "docs" / "eval")
    with run_server(project) as running, running.client() as http:
        # through the server: a second process opening the store would cost seconds
        migrated = http.post("/redpoll/v1/admin/migrations/up", json={})
        assert migrated.status_code == 200, migrated.text
        _ingest(http, "items", ITEMS)
        _ingest(http, "events", _shop_events())
        bad = _ingest(http, "events", ['{"event_id": "bad1", "ts": "yesterday"}', "not json"])
        assert bad["quarantined_rows"] == 2
        yield running


@pytest.fixture(scope="module")
def tokens(server: RunningServer) -> dict[str, str]:
    with server.client() as http:
        made = http.post(
            "/v0/tokens", params={"name": "reader", "scope": ["PIPES:READ", "DATASOURCES:READ"]}
        )
        assert made.status_code == 200, made.text
    return {"read": made.json()["token"], "admin": server.token}


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(driver: WebDriver, server: RunningServer, token: str) -> None:
    driver.get(server.url + "/ui/")
    driver.execute_script("sessionStorage.clear()")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token)
    field.submit()
    WebDriverWait(driver, 10).until(lambda d: d.current_url.endswith("/ui/endpoints"))
    driver.get_log("browser")  # start each page's check with an empty log


def open_page(driver: WebDriver, server: RunningServer, slug: str) -> None:
    """Open a page and wait until its content fragment has been swapped in."""
    driver.get(f"{server.url}/ui/{slug}")
    WebDriverWait(driver, 15).until(
        lambda d: (
            not d.find_elements(By.CSS_SELECTOR, "#content > p.muted:only-child")
            and d.find_elements(By.CSS_SELECTOR, "#nav ul.pages, #nav a")
        )
    )


def console_errors(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def measure(driver: WebDriver, name: str) -> dict[str, float]:
    """Page weight (the document and every asset, as encoded on the wire), first paint
    and when the content fragment was in (console.js marks `content-ready`), from the
    browser's own timing entries; prints them and saves a screenshot."""
    figures: dict[str, float] = driver.execute_script(
        """
        const entries = performance.getEntriesByType('navigation')
            .concat(performance.getEntriesByType('resource'));
        const paint = performance.getEntriesByName('first-contentful-paint')[0]
            || performance.getEntriesByType('paint')[0];
        const ready = performance.getEntriesByName('content-ready')[0];
        return {bytes: entries.reduce((s, e) => s + (e.encodedBodySize || e.transferSize || 0), 0),
                resources: entries.length, first_paint_ms: paint ? paint.startTime : -1,
                content_ms: ready ? ready.startTime : -1};
        """
    )
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    print(
        f"\n{name}: {figures['bytes'] / 1024:.1f} KB in {figures['resources']} requests,"
        f" first paint {figures['first_paint_ms']:.0f} ms,"
        f" content in {figures['content_ms']:.0f} ms"
    )
    return figures


def test_every_page_with_a_read_token(
    browser: WebDriver, server: RunningServer, tokens: dict[str, str]
) -> None:
    sign_in(browser, server, tokens["read"])
    for slug in READ_PAGES:
        open_page(browser, server, slug)
        assert not browser.find_elements(By.ID, "refused"), slug
        assert console_errors(browser) == [], slug
        figures = measure(browser, slug)
        assert figures["bytes"] <= MAX_PAGE_BYTES, (slug, figures)
        nav = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "#nav ul.pages a")}
        assert nav == {"Endpoints", "Data", "Trending", "Recommendations"}

    open_page(browser, server, "endpoints")
    # a read token sees parameters but not the SQL (ADMIN only)
    assert browser.find_elements(By.ID, "ep-also_bought")
    assert not browser.find_elements(By.CSS_SELECTOR, "pre.sql")

    open_page(browser, server, "trending")
    cells = browser.find_elements(By.CSS_SELECTOR, "table.trending tbody tr td:nth-child(3)")
    assert cells and "<b>mug</b>" in cells[0].text  # escaped, shown as text
    assert browser.find_elements(By.CSS_SELECTOR, "table.trending svg.spark polyline")

    open_page(browser, server, "recommendations")
    ab = browser.find_element(By.CSS_SELECTOR, "table.ab").text
    assert "for_user" in ab and "%" in ab

    open_page(browser, server, "data")
    quarantine = browser.find_element(By.ID, "q-events")
    WebDriverWait(browser, 10).until(lambda d: "rows; page 1 of 1" in quarantine.text)
    assert "2 rows" in quarantine.text


def test_also_bought_form_shows_the_api_rows(
    browser: WebDriver, server: RunningServer, tokens: dict[str, str]
) -> None:
    sign_in(browser, server, tokens["read"])
    open_page(browser, server, "endpoints")
    form = browser.find_element(By.CSS_SELECTOR, 'form.tryit[data-endpoint="also_bought"]')
    form.find_element(By.NAME, "item_id").send_keys("SKU001")
    form.find_element(By.NAME, "limit").send_keys("5", Keys.ENTER)  # the keyboard submits
    WebDriverWait(browser, 10).until(
        lambda _: form.find_element(By.CSS_SELECTOR, ".stats").get_attribute("data-rows")
    )
    table = form.find_element(By.CSS_SELECTOR, "table.rows")
    header = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    shown = [
        dict(zip(header, [td.text for td in tr.find_elements(By.TAG_NAME, "td")], strict=True))
        for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    api = httpx.get(
        server.url + "/v0/pipes/also_bought.json",
        params={"item_id": "SKU001", "limit": 5},
        headers={"Authorization": f"Bearer {tokens['read']}"},
    ).json()["data"]
    assert len(shown) == len(api) == 5
    for got, want in zip(shown, api, strict=True):  # rec_id differs per call
        assert (got["item_id"], got["title"], float(got["score"])) == (
            want["item_id"],
            want["title"],
            float(want["score"]),
        )
    stats = form.find_element(By.CSS_SELECTOR, ".stats").text
    assert "5 rows" in stats and "ms in ClickHouse" in stats
    assert "/v0/pipes/also_bought.json?item_id=SKU001&limit=5" in form.find_element(
        By.CSS_SELECTOR, "pre.curl"
    ).get_attribute("textContent")
    assert console_errors(browser) == []
    measure(browser, "endpoints-try-it")


def test_counters_and_chart_move_without_reload(
    browser: WebDriver, server: RunningServer, tokens: dict[str, str]
) -> None:
    sign_in(browser, server, tokens["read"])
    open_page(browser, server, "data")
    cell = browser.find_element(By.CSS_SELECTOR, '[data-rows="events"]')
    before = int(cell.text)
    browser.execute_script("window.notReloaded = true")
    WebDriverWait(browser, 5).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#live polyline")  # polling has begun
    )
    fresh = [
        {
            "event_id": f"live{n}",
            "ts": _iso(dt.datetime.now(dt.UTC)),
            "user_id": "u1",
            "item_id": "SKU002",
            "event_type": "view",
        }
        for n in range(40)
    ]
    with server.client() as http:
        _ingest(http, "events", fresh)
    try:
        WebDriverWait(browser, 10).until(lambda _: int(cell.text) == before + 40)
        chart = browser.find_element(By.ID, "live")
        WebDriverWait(browser, 5).until(lambda _: int(chart.get_attribute("data-total")) >= 40)
    except TimeoutException:
        pytest.fail(f"counter stayed at {cell.text} (before: {before})")
    assert float(browser.find_element(By.ID, "live").get_attribute("data-peak")) > 1
    assert browser.execute_script("return window.notReloaded") is True
    assert console_errors(browser) == []
    measure(browser, "data-live")


def test_read_token_is_refused_admin_pages(
    browser: WebDriver, server: RunningServer, tokens: dict[str, str]
) -> None:
    sign_in(browser, server, tokens["read"])
    for slug in ADMIN_PAGES:
        open_page(browser, server, slug)
        refused = browser.find_element(By.ID, "refused")
        assert "403" in refused.text and "ADMIN" in refused.text, refused.text
        assert not browser.find_elements(By.CSS_SELECTOR, "#content table")
        # the only console line is the browser's own note of the refused request
        assert all("403" in line for line in console_errors(browser))
        measure(browser, f"{slug}-refused")


def test_admin_pages_and_phone_width(
    browser: WebDriver, server: RunningServer, tokens: dict[str, str]
) -> None:
    with server.client() as http:  # a call for the Requests page (pipe_stats)
        assert http.get("/v0/pipes/popular.json").status_code == 200
    sign_in(browser, server, tokens["admin"])
    for slug in ADMIN_PAGES:
        open_page(browser, server, slug)
        if slug == "requests":  # the call log is written within about a second
            WebDriverWait(browser, 10, poll_frequency=1).until(
                lambda d: (
                    "popular" in d.find_element(By.ID, "content").text
                    or open_page(d, server, "requests")
                )
            )
        assert not browser.find_elements(By.ID, "refused"), slug
        if slug == "evaluation":
            WebDriverWait(browser, 10).until(
                lambda d: d.execute_script(
                    "const i = document.getElementById('eval-chart'); return i && i.naturalWidth"
                )
            )
        else:
            assert "popular" in browser.find_element(By.CSS_SELECTOR, "table.requests").text
        assert console_errors(browser) == [], slug
        figures = measure(browser, slug)
        assert figures["bytes"] <= MAX_PAGE_BYTES, (slug, figures)
    open_page(browser, server, "endpoints")
    assert browser.find_elements(By.CSS_SELECTOR, "#ep-also_bought pre.sql span.k")

    browser.set_window_size(390, 844)
    try:
        for slug in ("endpoints", "recommendations"):
            open_page(browser, server, slug)
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 1, (slug, overflow)
            measure(browser, f"{slug}-phone")
    finally:
        browser.set_window_size(1280, 900)
