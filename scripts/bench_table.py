#!/usr/bin/env python3
"""The README's table of `bench_scale`, made from its JSON (so the table is regenerated, never typed).

    target/release/bench_scale > bench_scale.json
    python3 scripts/bench_table.py bench_scale.json        # or: ... | python3 scripts/bench_table.py

Prints a markdown table: one row per entry of the report's `targets`, then a line naming the machine. A skipped
section prints "skipped", a failed one "error", never figures.
"""

import json
import sys


def cell(value):
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "met" if value else "**not met**"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def measured(row):
    """The figure; with its p99: `p50 / p99` for latency rows, `rate (p99 N ms)` for rate rows."""
    text, p99 = cell(row.get("measured")), row.get("p99_ms")
    if p99 is None:
        return text
    if "p50 / p99" in row["figure"]:
        return f"{text} / {cell(p99)}"
    return f"{text} (p99 {cell(p99)} ms)"


def escape(text):
    return text.replace("|", "\\|")


def main():
    source = open(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "-" else sys.stdin
    report = json.load(source)
    print("| figure | measured | baseline, same run | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    for row in report["targets"]:
        figure = escape(row["figure"])
        if row.get("skipped") or row.get("error"):
            state = "skipped" if row.get("skipped") else "error"
            print(f"| {figure} | {state} | | | | |")
            continue
        target = row.get("target")
        met = row.get("met")
        met_text = cell(met) if isinstance(met, bool) else "—"
        print(
            f"| {figure} | {escape(measured(row))} | {cell(row.get('baseline'))} | "
            f"{cell(row.get('ratio'))} | {cell(target)} | {met_text} |"
        )
    machine = report.get("machine", {})
    pg = machine.get("postgres", {})
    settings = report.get("settings", {})
    print()
    print(
        f"{machine.get('cores')} cores, load average {machine.get('load_average_before')} before and "
        f"{machine.get('load_average_after')} after; PostgreSQL {pg.get('server_version')} (fsync {pg.get('fsync')}, "
        f"synchronous_commit {pg.get('synchronous_commit')}, shared_buffers {pg.get('shared_buffers')}); "
        f"{cell(settings.get('tasks_stored'))} tasks stored, {cell(settings.get('drain_tasks'))} drained, "
        f"{settings.get('clients')} clients, {settings.get('seconds_per_load')} s per load; "
        f"run took {report.get('total_seconds')} s."
    )


if __name__ == "__main__":
    main()
