"""The RL side: trajectories, groups and the streamed export, on both stores."""

from __future__ import annotations

import json
import statistics
import time
import types

import pytest
from conftest import PROBLEM

from aiopslab_client import (
    BadRequestError,
    Client,
    Episode,
    LlmCall,
    NotFoundError,
    Outcome,
    TaskStatus,
    TaskType,
)


def test_trajectory_has_messages_llm_calls_and_reward(client: Client, tag: str) -> None:
    task = client.create(PROBLEM, agent_config={"model": tag, "temperature": 0.2})
    with pytest.raises(NotFoundError) as caught:
        client.trajectory(client.create(PROBLEM, backend_type="no-such-backend"))
    assert caught.value.details["entity"] == "trajectory"  # a pending task has none yet
    client.wait(task, timeout=30, poll=0.1)
    trajectory = client.trajectory(task)
    assert trajectory.task_id == task.id
    assert [m.role for m in trajectory.messages[:2]] == ["system", "user"]
    assert {m.role for m in trajectory.messages} >= {"assistant", "env"}
    assert len(trajectory.llm_calls) == 4 and all(isinstance(c, LlmCall) for c in trajectory.llm_calls)
    call = trajectory.llm_calls[0]
    assert call.step == 1 and call.request and call.response and call.latency_ms >= 0
    assert (
        call.usage is not None
        and call.usage.total_tokens == call.usage.prompt_tokens + call.usage.completion_tokens
    )
    assert trajectory.reward in (0.0, 1.0)
    assert "Detection Accuracy" in trajectory.evaluation
    assert trajectory.metadata.get("simulated") is True


def test_group_reports_statuses_and_rewards(client: Client, tag: str) -> None:
    batch = client.create_batch(PROBLEM, count=5, agent_config={"model": tag})
    assert batch.group_id is not None
    client.wait(batch.tasks, timeout=60, poll=0.1)
    group = client.group(batch.group_id)
    assert group.group_id == batch.group_id and group.total == 5 and group.is_finished
    assert group.by_status == {"completed": 5}
    assert sorted(t.id for t in group.tasks) == sorted(t.id for t in batch.tasks)
    assert len(group.rewards) == 5 and all(r in (0.0, 1.0) for r in group.rewards)
    assert group.mean_reward == pytest.approx(statistics.fmean(group.rewards))
    assert [t.reward for t in group.tasks] == group.rewards


def test_export_streams_the_matching_episodes(client: Client, tag: str, tmp_path) -> None:
    batch = client.create_batch(PROBLEM, count=3, agent_config={"model": tag}, metadata={"run": tag})
    other = client.create(PROBLEM, agent_config={"model": tag}, metadata={"run": "other"})
    client.wait([*batch.tasks, other], timeout=60, poll=0.1)

    stream = client.export(model=tag)
    assert isinstance(stream, types.GeneratorType)  # lazy: nothing read until iterated
    episodes = list(stream)
    assert len(episodes) == 4 and all(isinstance(e, Episode) for e in episodes)
    episode = episodes[0]
    assert episode.problem_id == PROBLEM and episode.task_type == TaskType.DETECTION
    assert episode.status == TaskStatus.COMPLETED and episode.agent_config == {"model": tag}
    assert {m.role for m in episode.messages} == {"system", "user", "assistant"}  # env turns become user
    assert episode.reward in (0.0, 1.0)

    mine = list(client.export(model=tag, metadata={"run": tag}))
    assert sorted(e.task_id for e in mine) == sorted(t.id for t in batch.tasks)
    assert {e.group_id for e in mine} == {batch.group_id}
    assert len(list(client.export(model=tag, metadata=("run", "other")))) == 1
    assert len(list(client.export(model=tag, metadata=f"run:{tag}", limit=2))) == 2
    assert list(client.export(model=tag, task_type="mitigation")) == []

    path = tmp_path / "episodes.jsonl"
    assert client.export_to(path, model=tag) == 4
    lines = path.read_text().splitlines()
    assert [json.loads(line)["task_id"] for line in lines] == [e.task_id for e in episodes]
    assert list(tmp_path.iterdir()) == [path]  # no .part left behind


def test_a_bad_export_filter_is_a_400_and_writes_no_file(client: Client, tmp_path) -> None:
    with pytest.raises(BadRequestError) as caught:
        list(client.export(task_type="cooking"))
    assert (caught.value.code, caught.value.field) == ("invalid_query", "task_type")
    path = tmp_path / "never.jsonl"
    with pytest.raises(BadRequestError):
        client.export_to(path, created_after="yesterday")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        client.export(metadata={"a": "1", "b": "2"}).__next__()  # the server filters on one pair


def test_export_labels_outcomes_and_filters_policy_versions(client: Client, tag: str) -> None:
    done = client.create(PROBLEM, agent_config={"model": tag, "model_version": 3})
    client.wait([done], timeout=60, poll=0.1)
    cut = client.create(PROBLEM, agent_config={"model": tag, "model_version": 4})
    for _ in range(600):
        if client.get(cut).status == TaskStatus.RUNNING:
            break
        time.sleep(0.05)
    client.cancel(cut)
    (cancelled,) = client.wait([cut], timeout=60, poll=0.1)
    assert cancelled.status == TaskStatus.CANCELLED

    (valid,) = list(client.export(model=tag))  # the default: valid episodes only
    assert valid.task_id == done.id and valid.outcome == Outcome.VALID
    assert valid.model_version == 3 and valid.reward in (0.0, 1.0)
    (aborted,) = list(client.export(model=tag, outcome=[Outcome.CANCELLED]))
    assert aborted.task_id == cut.id and aborted.outcome == Outcome.CANCELLED
    assert aborted.reward is None, "an episode that was not evaluated has no reward, not 0"
    assert len(list(client.export(model=tag, outcome="all"))) == 2
    assert [e.task_id for e in client.export(model=tag, outcome="all", min_model_version=4)] == [cut.id]
    assert [e.task_id for e in client.export(model=tag, model_version=3)] == [done.id]
    trajectory = client.trajectory(cut)
    assert trajectory.outcome == Outcome.CANCELLED and trajectory.reward is None
    assert all(call.model_version == 4 for call in trajectory.llm_calls)
