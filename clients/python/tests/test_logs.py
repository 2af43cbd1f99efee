"""Reading and following a task's log (Server-Sent Events), on both stores,
and a follow that survives a server restart (PostgreSQL)."""

from __future__ import annotations

import time

import pytest
from conftest import PROBLEM
from servers import ServerProcess

from aiopslab_client import Client, LogEntry, LogLevel, LogStream, NotFoundError, RetryPolicy, TaskStatus


def test_logs_reads_and_filters(client: Client) -> None:
    task = client.create(PROBLEM)
    client.wait(task, timeout=30, poll=0.1)
    entries = client.logs(task)
    assert entries and all(isinstance(e, LogEntry) and e.task_id == task.id for e in entries)
    ids = [e.id for e in entries]
    assert ids == sorted(ids)
    steps = [e for e in entries if e.context.step is not None]
    assert sorted({e.context.step for e in steps}) == [1, 2, 3, 4]
    assert steps[0].message.startswith("step 1/4: ") and steps[0].context.action
    assert entries[0].level == LogLevel.INFO
    assert [e.id for e in client.logs(task, after_id=ids[1])] == ids[2:]
    assert [e.id for e in client.logs(task, limit=2)] == ids[:2]
    assert client.logs(task, level="error") == []
    assert [e.id for e in client.logs(task, since=entries[-1].timestamp)][-1] == ids[-1]
    with_logs = client.get(task, include_logs=True)
    assert [e.id for e in with_logs.logs or []] == ids


def test_follow_sees_entries_arrive_and_ends_when_the_task_ends(client: Client) -> None:
    task = client.create(PROBLEM)
    arrivals = []
    status_at_first_entry = None
    with client.logs(task, follow=True) as stream:
        assert isinstance(stream, LogStream)
        for entry in stream:
            arrivals.append((time.monotonic(), entry))
            if status_at_first_entry is None:
                status_at_first_entry = client.get(task).status
    assert stream.status == TaskStatus.COMPLETED
    assert status_at_first_entry == TaskStatus.RUNNING  # the first entry came while the task ran
    assert arrivals[-1][0] - arrivals[0][0] > 0.3  # ... and the others later, over its 4 x 250 ms
    assert [e.id for _, e in arrivals] == [e.id for e in client.logs(task)]  # every entry, once each
    assert client.get(task).status == TaskStatus.COMPLETED


def test_follow_of_a_finished_task_replays_and_ends(client: Client) -> None:
    task = client.create(PROBLEM)
    client.wait(task, timeout=30, poll=0.1)
    stream = client.logs(task, follow=True)
    entries = list(stream)
    assert stream.status == TaskStatus.COMPLETED
    assert [e.id for e in entries] == [e.id for e in client.logs(task)]
    first = entries[0].id
    assert [e.id for e in client.logs(task, follow=True, after_id=first)] == [e.id for e in entries[1:]]


def test_follow_of_an_unknown_task_is_a_404(client: Client) -> None:
    with pytest.raises(NotFoundError):
        next(iter(client.logs("00000000-0000-4000-8000-000000000000", follow=True)))


def test_follow_can_stop_early(client: Client) -> None:
    task = client.create(PROBLEM)
    with client.logs(task, follow=True) as stream:
        first = next(stream)
    assert first.task_id == task.id and stream.status is None
    with pytest.raises(StopIteration):
        next(stream)
    client.wait(task, timeout=30, poll=0.1)


def test_follow_resumes_across_a_server_restart(
    log_dir, scratch_database, caplog: pytest.LogCaptureFixture
) -> None:
    """The server is killed mid-stream and started again on the same port and
    database: the stream reopens with Last-Event-ID and ends with the task,
    every entry seen once."""
    database = scratch_database()
    options = dict(
        workers=1, sim_steps=6, sim_step_delay_ms=300, dispatch_delay_ms=0, database_url=database.url
    )
    first = ServerProcess(log_dir, name="restart-1", **options).start()
    second = ServerProcess(log_dir, name="restart-2", port=first.port, **options)
    patient = RetryPolicy(retries=30, backoff=0.1, max_backoff=0.3)
    try:
        with Client(first.url, retries=patient) as client:
            task = client.create(PROBLEM, max_retries=2)
            seen = []
            for entry in client.logs(task, follow=True):
                seen.append(entry)
                if len(seen) == 2:
                    assert first.process is not None
                    first.process.kill()  # no end event, no goodbye
                    first.process.wait()
                    second.start(wait=False)
            (final,) = client.wait(task, timeout=60, poll=0.2)
            stored = [e.id for e in client.logs(task)]
    finally:
        first.stop()
        second.stop()
    assert final.status == TaskStatus.COMPLETED and final.attempt >= 2
    ids = [e.id for e in seen]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)  # nothing repeated after the reconnect
    assert ids == stored  # nothing lost either
    assert any("reopening" in record.getMessage() for record in caplog.records)  # it did reconnect
