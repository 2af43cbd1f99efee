"""The asyncio client against the real server, on both stores: the same
calls as the sync client, awaited, and many at once."""

from __future__ import annotations

import asyncio
import inspect
import json
import time

import pytest
from conftest import NOBODY, PROBLEM, QUICK_RETRIES
from servers import free_port

from aiopslab_client import (
    AsyncClient,
    AsyncLogStream,
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
    RetryPolicy,
    TaskStatus,
    TransportError,
    WaitTimeout,
)


def test_both_clients_have_the_same_methods_and_signatures() -> None:
    public = {name for name in dir(Client) if not name.startswith("_")} - {"close"}
    assert public == {name for name in dir(AsyncClient) if not name.startswith("_")} - {"aclose"}
    for name in ["create", "create_batch", "get", "list_page", "cancel", "trajectory", "group", "stats"]:
        sync, coroutine = getattr(Client, name), getattr(AsyncClient, name)
        assert inspect.signature(sync) == inspect.signature(coroutine), name
        assert inspect.iscoroutinefunction(coroutine) and not inspect.iscoroutinefunction(sync)
        assert sync.__doc__ and sync.__doc__ == coroutine.__doc__


@pytest.mark.asyncio
async def test_async_lifecycle(server, tag: str, tmp_path) -> None:
    async with AsyncClient(server.url, retries=QUICK_RETRIES) as client:
        assert (await client.health()).store == server.store
        task = await client.create(PROBLEM, agent_config={"model": tag}, idempotency_key=tag)
        assert task.status == TaskStatus.PENDING
        assert (await client.create(PROBLEM, agent_config={"model": tag}, idempotency_key=tag)).id == task.id

        stream = client.logs(task, follow=True)
        assert isinstance(stream, AsyncLogStream)
        followed = [entry async for entry in stream]
        assert stream.status == TaskStatus.COMPLETED
        assert [e.id for e in followed] == [e.id for e in await client.logs(task)]

        (done,) = await client.wait(task, timeout=30, poll=0.1)
        assert done.status == TaskStatus.COMPLETED and done.result is not None
        trajectory = await client.trajectory(task)
        assert trajectory.reward is not None and trajectory.llm_calls

        listed = [t.id async for t in client.list(problem_id=PROBLEM, limit=500)]
        assert task.id in listed
        episodes = [e async for e in client.export(model=tag)]
        assert [e.task_id for e in episodes] == [task.id]
        path = tmp_path / "async.jsonl"
        assert await client.export_to(path, model=tag) == 1
        assert json.loads(path.read_text())["task_id"] == task.id
        assert len(await client.problems(task_type="detection")) > 0
        assert len(await client.workers()) == 4
        assert (await client.stats()).tasks_by_status["completed"] >= 1


@pytest.mark.asyncio
async def test_async_batch_group_and_concurrent_calls(server) -> None:
    async with AsyncClient(server.url, retries=QUICK_RETRIES) as client:
        batch = await client.create_batch(PROBLEM, count=4)
        reads = await asyncio.gather(*(client.get(t) for t in batch.tasks))
        assert [t.id for t in reads] == [t.id for t in batch.tasks]
        await client.wait(batch.tasks, timeout=60, poll=0.1)
        group = await client.group(batch.group_id)
        assert group.total == 4 and len(group.rewards) == 4 and group.is_finished
        created = await asyncio.gather(*(client.create(PROBLEM, backend_type=NOBODY) for _ in range(10)))
        assert len({t.id for t in created}) == 10
        cancelled = await asyncio.gather(*(client.cancel(t) for t in created))
        assert {c.status for c in cancelled} == {TaskStatus.CANCELLED}


@pytest.mark.asyncio
async def test_async_errors_and_timeouts(server) -> None:
    async with AsyncClient(server.url, retries=QUICK_RETRIES) as client:
        with pytest.raises(BadRequestError) as caught:
            await client.create(PROBLEM, max_steps=1001)
        assert caught.value.field == "max_steps"
        with pytest.raises(NotFoundError):
            await client.get("00000000-0000-4000-8000-000000000000")
        with pytest.raises(NotFoundError):
            async for _ in client.logs("00000000-0000-4000-8000-000000000000", follow=True):
                pass
        stuck = await client.create(PROBLEM, backend_type=NOBODY)
        with pytest.raises(WaitTimeout) as timeout:
            await client.wait(stuck, timeout=0.3, poll=0.1)
        assert timeout.value.unfinished == [stuck.id]
        await client.cancel(stuck)
        with pytest.raises(ConflictError):
            await client.cancel(stuck)
        with pytest.raises(BadRequestError):
            async for _ in client.export(status="finished"):
                pass


@pytest.mark.asyncio
async def test_async_retries_stop_after_the_policy() -> None:
    policy = RetryPolicy(retries=3, backoff=0.05, max_backoff=0.05)
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", retries=policy) as client:
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            await client.stats()
        assert caught.value.attempts == 4 and time.monotonic() - started >= 3 * 0.025
        with pytest.raises(TransportError) as caught:
            await client.create(PROBLEM)
        assert caught.value.attempts == 1
