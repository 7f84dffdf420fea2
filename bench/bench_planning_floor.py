"""What a query costs before it reads a row, as a function of its size, in embedded chDB.

    .venv/bin/python bench/bench_planning_floor.py [--rounds 15]

Runs, in a scratch chDB folder, `SELECT <k> expressions FROM numbers(1)` for k = 1, 10,
100, 400 (`c_i = i + number`: one row, nothing to read) and prints the median wall time
of the query and of `EXPLAIN AST` (parse), `EXPLAIN QUERY TREE` (parse + analysis) and
`EXPLAIN PLAN` (+ planning). The time grows with the number of expressions, not with
rows: it is the floor under every endpoint, since a recommendation query of issue 20 has
hundreds of expressions (docs/recommendations.md, "Latency on the demo data").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

from chdb import session


def median_ms(run: session.Session, sql: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run.query(sql, "TSV")
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run = session.Session(folder)
        print(f"chDB {run.query('SELECT version()', 'TSV').bytes().decode().strip()}")
        print("| expressions | query chars | EXPLAIN AST ms | QUERY TREE ms | PLAN ms | run ms |")
        print("|---:|---:|---:|---:|---:|---:|")
        for k in (1, 10, 100, 400):
            sql = (
                "SELECT "
                + ", ".join(f"{i} + number AS c{i}" for i in range(k))
                + " FROM numbers(1)"
            )
            cells = [
                median_ms(run, prefix + sql, args.rounds)
                for prefix in ("EXPLAIN AST ", "EXPLAIN QUERY TREE ", "EXPLAIN PLAN ", "")
            ]
            print(f"| {k} | {len(sql)} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
        run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
