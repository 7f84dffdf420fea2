"""The console's pure parts, no browser needed: the SQL highlighter and the A/B
interval (console/highlight.py, console/charts.py)."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

from redpoll.console.charts import polyline, wilson_interval
from redpoll.console.highlight import highlight_sql
from tests.support.paths import REPO_ROOT

ENDPOINT_FILES = sorted((REPO_ROOT / "endpoints").glob("*.sql"))


@pytest.mark.parametrize("path", ENDPOINT_FILES, ids=lambda p: p.stem)
def test_highlighting_keeps_the_text(path: object) -> None:
    source = REPO_ROOT.joinpath("endpoints", getattr(path, "name", "")).read_text()
    marked = str(highlight_sql(source))
    assert html.unescape(re.sub(r"</?span[^>]*>", "", marked)) == source
    assert "<" not in re.sub(r"</?span[^>]*>", "", marked)  # everything else is escaped


def test_highlighting_classes() -> None:
    marked = str(
        highlight_sql(
            "SELECT count() AS n -- c <x>\nFROM t WHERE s = 'a' AND k > 3 {{ Int32(x, 1) }}"
        )
    )
    assert '<span class="k">SELECT</span>' in marked
    assert '<span class="f">count</span>' in marked
    assert '<span class="c">-- c &lt;x&gt;</span>' in marked
    assert '<span class="s">&#39;a&#39;</span>' in marked
    assert '<span class="n">3</span>' in marked
    assert '<span class="t">{{ Int32(x, 1) }}</span>' in marked


@pytest.mark.parametrize(("clicks", "shown"), [(17, 150), (0, 20), (20, 20), (1, 3), (380, 1000)])
def test_wilson_interval_solves_its_defining_equation(clicks: int, shown: int) -> None:
    # The Wilson bounds are the p where |p_hat - p| = z * sqrt(p (1 - p) / n): the roots of
    # (1 + z^2/n) p^2 - (2 p_hat + z^2/n) p + p_hat^2 = 0.
    z, p_hat = 1.96, clicks / shown
    roots = sorted(np.roots([1 + z * z / shown, -(2 * p_hat + z * z / shown), p_hat * p_hat]).real)
    low, high = wilson_interval(clicks, shown)
    assert low == pytest.approx(max(0.0, roots[0]), abs=1e-9)
    assert high == pytest.approx(min(1.0, roots[1]), abs=1e-9)
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_polyline_spans_the_box() -> None:
    points = [tuple(map(float, p.split(","))) for p in polyline([0, 5, 10], 100, 20).split()]
    assert points == [(0.0, 20.0), (50.0, 10.0), (100.0, 0.0)]
    assert polyline([], 100, 20) == ""
