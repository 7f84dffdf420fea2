"""PNG of the evaluation metrics per month (matplotlib, Agg backend: no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ("plot_series",)

TITLES = {
    "for_user_new": "for_user: items new to the user",
    "for_user_all": "for_user: all basket items",
    "also_bought": "also_bought: rest of the basket",
}
STYLES: dict[str, dict[str, Any]] = {
    "endpoint": {"color": "#c0392b", "linewidth": 2.4, "marker": "o"},
    "popularity_all": {"color": "#7f8c8d", "linestyle": "--", "marker": "."},
    "popularity_30d": {"color": "#2980b9", "linestyle": "--", "marker": "."},
    "cooc_monthly": {"color": "#27ae60", "linestyle": ":", "marker": "s"},
}


def plot_series(series: list[dict[str, Any]], k: int, path: Path, metric: str = "hit") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TITLES if any(row["task"] == t for row in series)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = [r for r in series if r["task"] == task]
        months = sorted({r["month"] for r in rows})
        for method in STYLES:
            by_month = {r["month"]: r for r in rows if r["method"] == method}
            if not by_month:
                continue
            xs = [m for m in months if m in by_month]
            ys = [by_month[m][metric] for m in xs]
            label = "endpoint (Redpoll SQL)" if method == "endpoint" else method
            ax.plot(xs, ys, label=label, **STYLES[method])
        ax.set_title(TITLES[task])
        ax.set_ylabel(f"{'HitRate' if metric == 'hit' else metric.upper()}@{k}")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", rotation=45)
        ax.legend(fontsize=8)
    fig.suptitle(f"Replay: {metric}@{k} per month (asked before each purchase is ingested)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
