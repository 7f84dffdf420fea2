"""The report of bench/bench_serving.py: a Markdown table (also printed), a PNG chart and
the figures as JSON, written to one folder. Ratios are to Redpoll with the cache on
(to the cache off when this build has no cache)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from http_replay import pct
from serving_load import ENDPOINTS, IngestStats, Level

LABELS = {
    "on": "Redpoll, cache on",
    "off": "Redpoll, cache off",
    "redis": "Redis co-occurrence",
    "raw": "ClickHouse, raw events",
}


def _ms(values: list[float], q: float) -> float:
    return pct(values, q) * 1000


def _num(value: float, digits: int = 0) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"  # NaN: nothing measured


def _ratio(value: float, base: float) -> str:
    if not base or base != base or value != value:
        return "n/a"
    return f"{value / base:.2f}x"


def _levels(results: dict[str, Any], key: str) -> dict[tuple[str, int], Level]:
    return {(lv.endpoint, lv.concurrency): lv for lv in results[key]["levels"]}


def markdown(results: dict[str, Any], info: dict[str, Any]) -> str:
    keys = list(results)
    base = "on" if "on" in results else "off" if "off" in results else keys[0]
    args = info["args"]
    concurrency = sorted({lv.concurrency for k in keys for lv in results[k]["levels"]})
    lines = [
        f"Serving side by side ({info['date']}, {info['machine']}): "
        f"`.venv/bin/python bench/bench_serving.py --ack {args.get('ack', 'visible')}`. "
        f"Online Retail, {info['events']:,} events: "
        f"the first {info['preloaded']:,} loaded before measuring, the rest replayed through "
        f"each system's POST endpoint at {float(args['rate']):,.0f} events/s in requests of "
        f"{args['batch']} during every level; ids drawn by their event count in the data; up "
        f"to {args['requests']} requests per level (fewer if the {args['level_seconds']} s cap "
        f"came first: n below). Ratios are to **{LABELS[base]}**.",
        "",
        "p50 / p99 latency (ms) and throughput (requests/s), per endpoint and concurrent clients:",
        "",
        "| endpoint | clients | " + " | ".join(LABELS[k] for k in keys) + " |",
        "|---|---:|" + "---|" * len(keys),
    ]
    by_key = {k: _levels(results, k) for k in keys}
    for endpoint in ENDPOINTS:
        for conc in concurrency:
            cells = []
            for k in keys:
                lv = by_key[k].get((endpoint, conc))
                if lv is None:
                    cells.append("")
                    continue
                cell = (
                    f"{_num(_ms(lv.latencies, 0.5), 2)} / {_num(_ms(lv.latencies, 0.99), 2)}, "
                    f"{_num(lv.throughput)}/s"
                )
                if len(lv.latencies) < int(args["requests"]):
                    cell += f" (n={len(lv.latencies)})"
                if lv.errors:
                    cell += f" **{lv.errors} errors**"
                cells.append(cell)
            lines.append(f"| {endpoint} | {conc} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"p99 latency and throughput relative to {LABELS[base]} (p99 below 1x: faster):",
        "",
        "| endpoint | clients | " + " | ".join(LABELS[k] for k in keys if k != base) + " |",
        "|---|---:|" + "---|" * (len(keys) - 1),
    ]
    for endpoint in ENDPOINTS:
        for conc in concurrency:
            ref = by_key[base].get((endpoint, conc))
            cells = []
            for k in keys:
                lv = by_key[k].get((endpoint, conc))
                if k == base:
                    continue
                if lv is None or ref is None:
                    cells.append("")
                    continue
                cells.append(
                    f"p99 {_ratio(_ms(lv.latencies, 0.99), _ms(ref.latencies, 0.99))}, "
                    f"req/s {_ratio(lv.throughput, ref.throughput)}"
                )
            lines.append(f"| {endpoint} | {conc} | " + " | ".join(cells) + " |")
    ingest_base = results[base]["ingest"].rate
    fresh_base = _ms(results[base]["fresh"], 0.99)
    lines += [
        "",
        "| system | max ingest, events/s | steady ingest reached, events/s | freshness p50 / "
        "p99, ms | cache hit ratio (also_bought / trending / for_user) | peak RSS, MiB | "
        "ingest vs base | freshness p99 vs base |",
        "|---|---:|---:|---|---|---:|---:|---:|",
    ]
    for k in keys:
        r = results[k]
        ingest: IngestStats = r["ingest"]
        steady: IngestStats = r["steady"]
        fresh = r["fresh"]
        hits = r.get("hits") or {}
        hit_text = (
            " / ".join("n/a" if hits.get(e) is None else f"{hits[e]:.0%}" for e in ENDPOINTS)
            if any(v is not None for v in hits.values())
            else "n/a"
        )
        fresh_text = f"{_num(_ms(fresh, 0.5), 1)} / {_num(_ms(fresh, 0.99), 1)} (n={len(fresh)})"
        if r["fresh_errors"]:
            fresh_text += f" **{len(r['fresh_errors'])} timed out**"
        steady_text = _num(steady.rate)
        if steady.errors:
            steady_text += f" **{len(steady.errors)}+ errors**"
        lines.append(
            f"| {LABELS[k]} | {_num(ingest.rate)} | {steady_text} | {fresh_text} | {hit_text} | "
            f"{r['rss'] / 2**20:,.0f} | {_ratio(ingest.rate, ingest_base)} | "
            f"{_ratio(_ms(fresh, 0.99), fresh_base)} |"
        )
    lines += [
        "",
        f"Max ingest: {args['ingest_clients']} clients x {args['ingest_batch']}-event requests "
        f"for {args['ingest_seconds']} s, no other load from the bench. Freshness: a purchase "
        "of two never-bought catalog items acknowledged -> the second in also_bought of the first "
        "(asked once before, so a cache holds the old answer). RSS: the server processes "
        "(Redis: redis-server + the app). Redis runs without persistence and answers ids and "
        "scores only (no catalog join); its for_user is co-purchase neighbours of the "
        "user's items (Redpoll's default is trend x title similarity, variant a); the raw "
        "endpoints are bench/raw_endpoints/*.sql.",
    ]
    for note in info["notes"]:
        lines.append(f"Note: {note}.")
    for k in keys:
        errors = results[k]["fresh_errors"] + results[k]["steady"].errors
        errors += results[k]["ingest"].errors
        errors += [lv.first_error for lv in results[k]["levels"] if lv.first_error]
        if errors:
            lines.append(f"Errors, {LABELS[k]} (first): `{errors[0][:160]}`")
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, endpoint in zip(axes.flat, ENDPOINTS, strict=False):
        concurrency = sorted({lv.concurrency for lv in results[keys[0]]["levels"]})
        width = 0.8 / len(keys)
        for n, k in enumerate(keys):
            levels = _levels(results, k)
            p99 = [_ms(levels[(endpoint, c)].latencies, 0.99) for c in concurrency]
            xs = [i + n * width for i in range(len(concurrency))]
            ax.bar(xs, p99, width, label=LABELS[k])
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(concurrency))])
        ax.set_xticklabels([f"{c} client{'s' if c > 1 else ''}" for c in concurrency])
        ax.set_yscale("log")
        ax.set_ylabel("p99 latency, ms (log)")
        ax.set_title(endpoint)
        ax.grid(axis="y", alpha=0.3)
    ax = axes.flat[3]
    rates = [results[k]["ingest"].rate for k in keys]
    ax.bar(range(len(keys)), rates, color=[f"C{n}" for n in range(len(keys))])
    for n, k in enumerate(keys):
        ax.annotate(
            f"fresh p99 {_num(_ms(results[k]['fresh'], 0.99), 0)} ms",
            (n, rates[n]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([LABELS[k].replace(", ", "\n") for k in keys], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("max ingest, events/s (log)")
    ax.set_title("ingest and freshness")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Serving under steady ingest, Online Retail (bench/bench_serving.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figures(results: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"info": info, "systems": {}}
    for k, r in results.items():
        out["systems"][k] = {
            "label": LABELS[k],
            "levels": [
                {
                    "endpoint": lv.endpoint,
                    "concurrency": lv.concurrency,
                    "n": len(lv.latencies),
                    "errors": lv.errors,
                    "p50_ms": _ms(lv.latencies, 0.5),
                    "p99_ms": _ms(lv.latencies, 0.99),
                    "max_ms": max(lv.latencies, default=float("nan")) * 1000,
                    "requests_per_s": lv.throughput,
                }
                for lv in r["levels"]
            ],
            "cache_hit_ratio": r.get("hits"),
            "max_ingest_events_per_s": r["ingest"].rate,
            "steady_ingest_events_per_s": r["steady"].rate,
            "steady_dropped_ticks": r["steady"].dropped_ticks,
            "freshness_ms": [f * 1000 for f in r["fresh"]],
            "freshness_errors": r["fresh_errors"],
            "peak_rss_bytes": r["rss"],
        }
    return out


def write_report(folder: Path, results: dict[str, Any], info: dict[str, Any]) -> str:
    """Write serving.md, serving.png and serving.json to `folder`; return the Markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(results, info)
    (folder / "serving.md").write_text(text)
    chart(results, folder / "serving.png")
    (folder / "serving.json").write_text(json.dumps(figures(results, info), indent=1) + "\n")
    return text
