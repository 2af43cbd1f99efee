"""An export of 10,000 episodes through the client, on both stores: created
with ``create_batch`` in chunks of 1,000, run by 8 in-process workers (2
simulated steps, no delay), waited for, streamed to JSON Lines with
``export_to`` and read back as a table with ``pyarrow.json.read_json``."""

from __future__ import annotations

import time
import tracemalloc
from typing import Iterator

import pyarrow as pa
import pyarrow.json as pa_json
import pytest
from conftest import PROBLEM, serve_store
from servers import ServerProcess

from aiopslab_client import Client, RetryPolicy

EPISODES = 10_000
CHUNK = 1_000
COLUMNS = {
    "task_id", "problem_id", "task_type", "status", "messages", "reward",
    "evaluation", "agent_config", "metadata", "group_id",
}  # fmt: skip


@pytest.fixture(scope="module", params=["memory", "postgres"])
def fast_server(request, log_dir, scratch_database) -> Iterator[ServerProcess]:
    """A fresh server with a fleet that drains quickly; the embedded store
    keeps every finished task (its default keeps 10,000)."""
    with serve_store(
        request.param,
        log_dir,
        scratch_database,
        workers=8,
        sim_steps=2,
        sim_step_delay_ms=0,
        dispatch_delay_ms=0,
        extra_args=["--memory-max-finished-tasks", "0"],
        name="export",
    ) as server:
        yield server


def test_export_of_10000_episodes_reads_back_as_a_table(
    fast_server: ServerProcess, tag: str, tmp_path
) -> None:
    timings = {}
    with Client(fast_server.url, timeout=120, retries=RetryPolicy(retries=3)) as client:
        started = time.monotonic()
        tasks = []
        for chunk in range(EPISODES // CHUNK):
            batch = client.create_batch(
                PROBLEM,
                count=CHUNK,
                agent_config={"model": tag, "temperature": 1.0},
                metadata={"run": tag, "chunk": str(chunk)},
                idempotency_key=f"{tag}-{chunk}",
            )
            tasks += batch.tasks
        timings["create"] = time.monotonic() - started

        started = time.monotonic()
        done = client.wait(tasks, timeout=600, poll=0.5)
        timings["wait"] = time.monotonic() - started
        assert len(done) == EPISODES and {str(t.status) for t in done} == {"completed"}

        path = tmp_path / "episodes.jsonl"
        started = time.monotonic()
        tracemalloc.start()
        count = client.export_to(path, metadata={"run": tag})
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        timings["export"] = time.monotonic() - started
    assert count == EPISODES
    size = path.stat().st_size
    # Streamed line by line: the client never held more than a sliver of the file.
    assert peak < size / 10, f"export_to peaked at {peak} bytes for a {size}-byte file"

    started = time.monotonic()
    table = pa_json.read_json(path)
    timings["read_json"] = time.monotonic() - started
    print(
        f"\n{fast_server.store}: {size / 1e6:.1f} MB, peak {peak / 1e6:.2f} MB, "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    )

    assert table.num_rows == EPISODES
    assert set(table.column_names) >= COLUMNS
    assert pa.types.is_list(table.schema.field("messages").type)
    assert table.schema.field("messages").type.value_type.names == ["role", "content"]
    assert pa.types.is_floating(table.schema.field("reward").type)
    assert set(table.column("reward").to_pylist()) <= {0.0, 1.0}
    assert set(table.column("problem_id").to_pylist()) == {PROBLEM}
    assert set(table.column("task_type").to_pylist()) == {"detection"}
    assert set(table.column("status").to_pylist()) == {"completed"}
    assert len(set(table.column("task_id").to_pylist())) == EPISODES
    assert set(table.column("task_id").to_pylist()) == {t.id for t in tasks}
    assert len(set(table.column("group_id").to_pylist())) == EPISODES // CHUNK
    roles = table.column("messages").combine_chunks().flatten().field("role")
    assert set(roles.to_pylist()) == {"system", "user", "assistant"}
    first = table.slice(0, 1).to_pylist()[0]
    assert first["agent_config"] == {"model": tag, "temperature": 1.0}
    assert first["metadata"]["run"] == tag
