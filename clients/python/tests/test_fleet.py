"""Workers, the problem catalog, the counts and the health check, on both stores."""

from __future__ import annotations

from conftest import PROBLEM

from aiopslab_client import Client, Health, Problem, Stats, TaskType, Worker, WorkerStatus


def test_health_names_the_store(client: Client, server) -> None:
    health = client.health()
    assert isinstance(health, Health) and health.status == "ok" and health.store == server.store


def test_workers_lists_the_in_process_workers(client: Client) -> None:
    client.wait(client.create(PROBLEM), timeout=30, poll=0.1)
    workers = client.workers()
    assert [w.id for w in workers] == [f"worker-00{n}-simulated" for n in range(1, 5)]
    assert all(isinstance(w, Worker) and w.backend_type == "default" for w in workers)
    assert all(w.status in (WorkerStatus.IDLE, WorkerStatus.BUSY) for w in workers)
    assert sum(w.tasks_completed for w in workers) >= 1
    one = client.worker(workers[0].id)
    assert one.id == workers[0].id and one.capabilities.max_parallel_tasks == 1
    assert client.workers(backend_type="nobody") == []
    assert client.workers(status="offline") == []


def test_problems_is_the_catalog(client: Client) -> None:
    problems = client.problems()
    assert len(problems) == 89 and all(isinstance(p, Problem) for p in problems)
    assert PROBLEM in {p.id for p in problems}
    detection = client.problems(task_type=TaskType.DETECTION)
    assert detection and all(p.task_type == TaskType.DETECTION for p in detection)
    hotel = client.problems(application="hotel_reservation")
    assert hotel and {p.application for p in hotel} == {"HotelReservation"}


def test_stats_counts_tasks_and_workers(client: Client) -> None:
    stats = client.stats()
    assert isinstance(stats, Stats)
    assert set(stats.tasks_by_status) == {"pending", "running", "completed", "failed", "timeout", "cancelled"}
    assert sum(stats.workers_by_status.values()) == 4
    before = stats.tasks_by_status["cancelled"]
    client.cancel(client.create(PROBLEM, backend_type="nobody"))
    assert client.stats().tasks_by_status["cancelled"] == before + 1
