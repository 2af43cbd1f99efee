"""The quickstart (docs/quickstart.md, the user's ../shared/seed/quickstart.md
verbatim) with the client instead of requests and curl, on both stores: its
end-to-end test scenario step by step (create, see it pending, see a worker
pick it up, see it complete with a result, read its logs), its "Basic Usage"
reads, its load test of ten concurrent submissions with random priorities,
and its monitoring commands (tasks grouped by status, workers with counts).

Each store gets a fresh server like the quickstart's first command: two
in-process workers and the default one-second dispatch delay (which is what
lets a task read straight back be ``pending``), with shorter simulated
episodes (3 steps of 300 ms) to keep the run short.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from typing import Iterator

import pytest
from conftest import serve_store
from servers import ServerProcess

from aiopslab_client import AsyncClient, Client, TaskStatus

PROBLEM = "misconfig_app_hotel_res-detection-1"


@pytest.fixture(scope="module", params=["memory", "postgres"])
def quickstart_server(request, log_dir, scratch_database) -> Iterator[ServerProcess]:
    """A fresh server per store, as the quickstart's first command starts it."""
    with serve_store(
        request.param,
        log_dir,
        scratch_database,
        workers=2,
        sim_steps=3,
        sim_step_delay_ms=300,
        dispatch_delay_ms=1000,
        name="quickstart",
    ) as server:
        yield server


def test_task_lifecycle(quickstart_server: ServerProcess) -> None:
    """The quickstart's ``test_task_lifecycle``, step for step."""
    with Client(quickstart_server.url) as client:
        # 1. Create a task
        task = client.create(PROBLEM, agent_config={"model": "gpt-4"}, max_steps=30)
        task_id = task.id
        assert task.status == TaskStatus.PENDING

        # 2. Verify task is pending
        task = client.get(task_id)
        assert task.status == TaskStatus.PENDING

        # 3. Wait for worker to pick up task
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            task = client.get(task_id)
            if task.status != TaskStatus.PENDING:
                break
            time.sleep(0.05)
        assert task.status == TaskStatus.RUNNING
        assert task.worker_id is not None and task.worker_id.endswith("-simulated")

        # 4. Wait for task completion
        (task,) = client.wait(task_id, timeout=300, poll=0.2)

        # 5. Verify task completed
        assert task.status == TaskStatus.COMPLETED
        assert task.result is not None
        assert task.result.metrics["steps_taken"] == 3 and "duration_seconds" in task.result.metrics
        assert task.result.output["solution"] in ("Yes", "No")

        # 6. Get task logs
        logs = client.logs(task_id)
        assert len(logs) > 0

        # Basic Usage 4: the completed task with its results and logs
        with_logs = client.get(task_id, include_logs=True)
        assert with_logs.result is not None and with_logs.result.logs
        assert [e.id for e in with_logs.logs or []] == [e.id for e in logs]

        # Basic Usage 3: list tasks with filters
        assert [t.id for t in client.list(status="completed")] == [task_id]
        page = client.list_page(status="pending", limit=10)
        assert (page.tasks, page.total, page.limit, page.offset) == ([], 0, 10, 0)

        # Basic Usage 5: monitor workers
        workers = {w.id: w for w in client.workers()}
        assert sorted(workers) == ["worker-001-simulated", "worker-002-simulated"]
        assert workers[task.worker_id].tasks_completed == 1
        assert client.stats().tasks_by_status["completed"] == 1


def test_load_test_and_monitoring(quickstart_server: ServerProcess) -> None:
    """Ten concurrent submissions of ``...-detection-$i`` with random
    priorities all succeed; only ``-detection-1`` is in AIOpsLab's catalog,
    so the nine others fail at run time with ``unknown_problem``."""

    async def submit_all() -> list:
        async with AsyncClient(quickstart_server.url) as client:
            return await asyncio.gather(
                *(
                    client.create(f"misconfig_app_hotel_res-detection-{i}", priority=random.randrange(10))
                    for i in range(1, 11)
                )
            )

    tasks = asyncio.run(submit_all())
    assert len(tasks) == 10 and all(t.status == TaskStatus.PENDING for t in tasks)
    with Client(quickstart_server.url) as client:
        done = {t.problem_id: t for t in client.wait(tasks, timeout=120, poll=0.2)}
        assert done[PROBLEM].status == TaskStatus.COMPLETED
        for i in range(2, 11):
            failed = done[f"misconfig_app_hotel_res-detection-{i}"]
            assert failed.status == TaskStatus.FAILED
            assert failed.error_details is not None and failed.error_details.code == "unknown_problem"
            assert "not one of the 89 problems" in failed.error_details.message

        # watch 'curl -s .../tasks?limit=100 | jq ".tasks | group_by(.status) | ..."'
        by_status = collections.Counter(str(t.status) for t in client.list(limit=100))
        assert by_status == {"completed": 2, "failed": 9}  # with the lifecycle test's task

        # curl .../workers | jq '.workers | map({id, status, tasks: .tasks_completed})'
        summary = [(w.id, w.tasks_completed) for w in client.workers()]
        assert sum(completed for _, completed in summary) == 2
        stats = client.stats()
        assert (stats.tasks_by_status["completed"], stats.tasks_by_status["failed"]) == (2, 9)
        assert sum(w.tasks_failed for w in client.workers()) == 9
