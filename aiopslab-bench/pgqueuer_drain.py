"""PgQueuer's drain of no-op jobs, the baseline of `bench_scale`'s drain (issue 13, item 6).

Run by `bench_scale` with the Python of the venv its setup made (`.bench/venv`, with `pgqueuer` and `asyncpg`
installed from PyPI); by hand:

    .bench/venv/bin/python examples/bench_support/pgqueuer_drain.py --dsn postgresql://postgres@127.0.0.1:5432/DB

It installs PgQueuer's schema in the database (`Queries.install()`, what `pgqueuer install` runs) unless it is
there, empties the queue, enqueues `--jobs` jobs for one entrypoint in a single batch (`Queries.enqueue` with
lists), then drains them with one `QueueManager` (`mode=drain`: it returns once the queue is empty and in-flight
jobs are done) whose entrypoint does nothing. Concurrency: `--batch-size` jobs per dequeue and at most
`--max-concurrent` picked at once (PgQueuer requires the cap to be at least twice the batch), so 8 and 16 match the
16 slots of the worker it is compared with.

The span is measured from PgQueuer's own log table, on the database's clock, like `started_at`/`completed_at` of
the tasks table: the first `picked` row to the last `successful` one (the ack). Prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import timedelta

import asyncpg
import pgqueuer
from pgqueuer import AsyncpgDriver, Job, QueueManager, Queries
from pgqueuer.types import QueueExecutionMode

ENTRYPOINT = "bench_noop"


async def schema_installed(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT to_regclass('pgqueuer') IS NOT NULL")


async def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-concurrent", type=int, default=16)
    args = parser.parse_args()

    conn = await asyncpg.connect(args.dsn)
    queries = Queries(AsyncpgDriver(conn))
    installed_here = False
    if not await schema_installed(conn):
        await queries.install()
        installed_here = True
    await conn.execute("TRUNCATE pgqueuer, pgqueuer_log")

    started = time.monotonic()
    await queries.enqueue([ENTRYPOINT] * args.jobs, [None] * args.jobs, [0] * args.jobs)
    enqueue_seconds = time.monotonic() - started
    print(f"pgqueuer: enqueued {args.jobs} jobs in {enqueue_seconds:.2f} s; draining", file=sys.stderr)

    # The queue manager gets a connection of its own (its listener and queries), as a PgQueuer worker process does.
    qm_conn = await asyncpg.connect(args.dsn)
    qm = QueueManager(Queries(AsyncpgDriver(qm_conn)))
    calls = 0

    @qm.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        nonlocal calls
        calls += 1

    run_started = time.monotonic()
    await qm.run(
        mode=QueueExecutionMode.drain,
        batch_size=args.batch_size,
        max_concurrent_tasks=args.max_concurrent,
        dequeue_timeout=timedelta(seconds=1),
    )
    run_seconds = time.monotonic() - run_started
    await qm_conn.close()

    row = await conn.fetchrow(
        """
        SELECT min(created) FILTER (WHERE status = 'picked') AS first_pick,
               max(created) FILTER (WHERE status = 'successful') AS last_ack,
               count(*) FILTER (WHERE status = 'picked') AS picked,
               count(*) FILTER (WHERE status = 'successful') AS successful,
               count(*) FILTER (WHERE status NOT IN ('queued', 'picked', 'successful')) AS other
        FROM pgqueuer_log
        """
    )
    left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
    await conn.close()
    span = (row["last_ack"] - row["first_pick"]).total_seconds() if row["first_pick"] and row["last_ack"] else None
    return {
        "pgqueuer_version": pgqueuer.__version__,
        "asyncpg_version": asyncpg.__version__,
        "python": sys.version.split()[0],
        "schema_installed_by_this_run": installed_here,
        "jobs": args.jobs,
        "batch_size": args.batch_size,
        "max_concurrent_tasks": args.max_concurrent,
        "enqueue_seconds": round(enqueue_seconds, 3),
        "entrypoint_calls": calls,
        "picked": row["picked"],
        "successful": row["successful"],
        "other_terminal": row["other"],
        "jobs_left_in_queue": left,
        "run_seconds_wall": round(run_seconds, 3),
        "seconds_first_pick_to_last_ack": round(span, 3) if span is not None else None,
        "jobs_per_sec": round(row["successful"] / span, 1) if span else None,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
