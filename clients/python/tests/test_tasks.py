"""Creating, reading, listing, cancelling and waiting for tasks, and the
errors the server answers, on both stores."""

from __future__ import annotations

import time
import types

import pytest
from conftest import NOBODY, PROBLEM

from aiopslab_client import (
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
    Task,
    TaskSpec,
    TaskStatus,
    WaitTimeout,
)


def test_create_sends_every_field_and_get_reads_it_back(client: Client, tag: str) -> None:
    task = client.create(
        PROBLEM,
        agent_config={"model": tag, "temperature": 0.7},
        max_steps=12,
        timeout_minutes=20,
        priority=9,
        metadata={"run": tag, "nested": {"a": [1, 2.5, None]}},
        backend_type="default",
        max_retries=1,
    )
    assert isinstance(task, Task)
    assert task.status == TaskStatus.PENDING and not task.is_terminal
    params = task.parameters
    assert params.agent_config == {"model": tag, "temperature": 0.7}
    assert (params.max_steps, params.timeout_minutes, params.priority, params.max_retries) == (12, 20, 9, 1)
    assert params.metadata == {"run": tag, "nested": {"a": [1, 2.5, None]}}
    again = client.get(task.id)
    assert again.id == task.id and again.created_at == task.created_at
    assert client.get(task).parameters == params  # a Task is accepted wherever an id is


def test_server_defaults_apply_to_fields_left_out(client: Client) -> None:
    task = client.create(PROBLEM, backend_type=NOBODY)
    p = task.parameters
    assert (p.max_steps, p.timeout_minutes, p.priority, p.max_retries, p.agent_config) == (30, 30, 5, 0, {})
    client.cancel(task)


def test_idempotency_key_replays_and_conflicts(client: Client, tag: str) -> None:
    first = client.create(PROBLEM, metadata={"run": tag}, backend_type=NOBODY, idempotency_key=tag)
    replay = client.create(PROBLEM, metadata={"run": tag}, backend_type=NOBODY, idempotency_key=tag)
    assert replay.id == first.id
    with pytest.raises(ConflictError) as caught:
        client.create(PROBLEM, metadata={"run": "other"}, idempotency_key=tag)
    error = caught.value
    assert (error.status, error.code, error.details) == (409, "idempotency_conflict", {"key": tag})
    assert "nothing was created" in error.message
    client.cancel(first)


def test_create_batch_both_shapes_and_replay(client: Client, tag: str) -> None:
    repeated = client.create_batch(PROBLEM, count=3, agent_config={"model": tag}, backend_type=NOBODY)
    assert repeated.group_id and len(repeated.tasks) == 3 and not repeated.replayed
    assert {t.group_id for t in repeated.tasks} == {repeated.group_id}
    assert all(t.parameters.agent_config == {"model": tag} for t in repeated.tasks)

    listed = client.create_batch(
        [
            TaskSpec(problem_id=PROBLEM, priority=1, backend_type=NOBODY),
            {"problem_id": "custom", "backend_type": NOBODY},
        ],
        idempotency_key=tag,
    )
    assert [t.problem_id for t in listed.tasks] == [PROBLEM, "custom"]
    assert listed.tasks[0].parameters.priority == 1
    replay = client.create_batch(
        [
            TaskSpec(problem_id=PROBLEM, priority=1, backend_type=NOBODY),
            {"problem_id": "custom", "backend_type": NOBODY},
        ],
        idempotency_key=tag,
    )
    assert replay.replayed and [t.id for t in replay.tasks] == [t.id for t in listed.tasks]

    with pytest.raises(BadRequestError) as caught:
        client.create_batch([{"problem_id": PROBLEM}, {"problem_id": PROBLEM, "max_steps": 0}])
    assert caught.value.field == "tasks[1].max_steps"
    with pytest.raises(BadRequestError) as caught:
        client.create_batch(PROBLEM, count=1001)
    assert caught.value.field == "count"
    for task in repeated.tasks + listed.tasks:
        client.cancel(task)


def test_create_batch_refuses_mixed_shapes_before_sending(client: Client) -> None:
    with pytest.raises(ValueError):
        client.create_batch(PROBLEM)  # a single task needs a count
    with pytest.raises(ValueError):
        client.create_batch([PROBLEM], count=2)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"problem_id": ""}, "problem_id"),
        ({"problem_id": "   "}, "problem_id"),
        ({"problem_id": PROBLEM, "max_steps": 0}, "max_steps"),
        ({"problem_id": PROBLEM, "priority": 11}, "priority"),
        ({"problem_id": PROBLEM, "timeout_minutes": 181}, "timeout_minutes"),
        ({"problem_id": PROBLEM, "callback_url": "ftp://example.com/hook"}, "callback_url"),
        ({"problem_id": PROBLEM, "callback_url": "http://127.0.0.1:9/hook"}, "callback_url"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(client: Client, fields: dict, field: str) -> None:
    fields = dict(fields)
    problem_id = fields.pop("problem_id")
    with pytest.raises(BadRequestError) as caught:
        client.create(problem_id, **fields)
    error = caught.value
    assert error.status == 400 and error.code == "validation_error"
    assert error.field == field and error.details["message"]
    assert str(error).startswith("400 validation_error: ") and "POST /tasks" in str(error)


def test_an_unknown_field_is_refused_by_the_spec_and_by_the_server(client: Client) -> None:
    with pytest.raises(ValueError):
        TaskSpec(problem_id=PROBLEM, max_stepz=3)
    with pytest.raises(BadRequestError) as caught:
        client.create_batch([{"problem_id": PROBLEM}], idempotency_key="bad key with spaces")
    assert caught.value.field == "Idempotency-Key"


def test_unknown_ids_are_404s_with_details(client: Client) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for call, entity in [
        (lambda: client.get(missing), "task"),
        (lambda: client.cancel(missing), "task"),
        (lambda: client.trajectory(missing), "task"),
        (lambda: client.logs(missing), "task"),
        (lambda: client.group(missing), "group"),
        (lambda: client.worker("worker-999-nobody"), "worker"),
    ]:
        with pytest.raises(NotFoundError) as caught:
            call()
        assert caught.value.status == 404 and caught.value.code == "not_found"
        assert caught.value.details["entity"] == entity


def test_a_malformed_id_or_query_value_is_a_400(client: Client) -> None:
    with pytest.raises(BadRequestError) as caught:
        client.get("not-a-uuid")
    assert caught.value.status == 400
    with pytest.raises(BadRequestError) as caught:
        client.list_page(status="bogus")
    assert (caught.value.code, caught.value.field) == ("invalid_query", "status")
    with pytest.raises(BadRequestError) as caught:
        client.list_page(limit=101)
    assert caught.value.field == "limit"


def test_list_walks_every_page_lazily(client: Client) -> None:
    batch = client.create_batch(PROBLEM, count=250, backend_type=NOBODY)
    walk = client.list(group_id=batch.group_id, page_size=100)
    assert isinstance(walk, types.GeneratorType)  # nothing fetched until iterated
    ids = [task.id for task in walk]
    assert len(ids) == 250 and set(ids) == {t.id for t in batch.tasks}
    oldest_first = [t.id for t in client.list(group_id=batch.group_id, sort="created_at", page_size=7)]
    assert sorted(oldest_first) == sorted(ids) and len(oldest_first) == 250
    assert len(list(client.list(group_id=batch.group_id, limit=42))) == 42
    page = client.list_page(group_id=batch.group_id, limit=10, offset=245)
    assert (len(page.tasks), page.total, page.limit, page.offset) == (5, 250, 10, 245)
    for task in batch.tasks:
        client.cancel(task)
    assert {t.status for t in client.list(group_id=batch.group_id)} == {TaskStatus.CANCELLED}


def test_cancel_pending_running_and_terminal(client: Client) -> None:
    pending = client.create(PROBLEM, backend_type=NOBODY)
    cancelled = client.cancel(pending.id)
    assert (cancelled.status, cancelled.cancel_requested) == (TaskStatus.CANCELLED, False)
    assert client.get(pending).status == TaskStatus.CANCELLED
    with pytest.raises(ConflictError) as caught:
        client.cancel(pending)
    assert caught.value.code == "already_terminal"
    assert caught.value.details["status"] == "cancelled"

    running = client.create(PROBLEM)
    deadline = time.monotonic() + 20
    while client.get(running).status == TaskStatus.PENDING and time.monotonic() < deadline:
        time.sleep(0.02)
    answer = client.cancel(running)  # a run takes 4 x 250 ms: it is still running
    assert (answer.status, answer.cancel_requested) == (TaskStatus.RUNNING, True)
    (final,) = client.wait(running, timeout=30, poll=0.1)
    assert final.status == TaskStatus.CANCELLED


def test_wait_returns_terminal_tasks_in_order(client: Client) -> None:
    batch = client.create_batch(PROBLEM, count=4)
    ids = [t.id for t in batch.tasks]
    done = client.wait(list(reversed(ids)), timeout=60, poll=0.1)
    assert [t.id for t in done] == list(reversed(ids))
    assert all(t.status == TaskStatus.COMPLETED and t.result is not None for t in done)


def test_wait_timeout_names_the_unfinished_tasks(client: Client) -> None:
    finished = client.create(PROBLEM, backend_type=NOBODY)
    client.cancel(finished)
    stuck = client.create(PROBLEM, backend_type=NOBODY)
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        client.wait([finished.id, stuck.id], timeout=0.5, poll=0.1)
    assert 0.4 < time.monotonic() - started < 5
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert error.unfinished == [stuck.id] and [t.id for t in error.finished] == [finished.id]
    assert stuck.id in str(error) and "1 of 2 tasks" in str(error)
    client.cancel(stuck)


def test_a_task_carries_its_experiment(client: Client, tag: str) -> None:
    experiment = f"exp-{tag}"[:128]
    task = client.create(PROBLEM, backend_type=NOBODY, experiment=experiment)
    assert task.experiment == experiment and client.get(task).experiment == experiment
    assert [t.id for t in client.list(experiment=experiment)] == [task.id]
    with pytest.raises(BadRequestError) as refused:
        client.create(PROBLEM, backend_type=NOBODY, experiment="not allowed!")
    assert refused.value.field == "experiment"
