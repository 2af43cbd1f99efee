"""The models against the wire format the real server documents at
/openapi.json, and their tolerance of what a newer server may send."""

from __future__ import annotations

import httpx
import pytest

from aiopslab_client import models
from aiopslab_client.models import Task, TaskStatus, is_terminal

# Each model and the schema of /openapi.json it reads.
MODELS = {
    "Task": models.Task,
    "TaskParameters": models.TaskParameters,
    "TaskResult": models.TaskResult,
    "ErrorDetails": models.ErrorDetails,
    "TaskPage": models.TaskPage,
    "TaskView": models.Task,
    "LogEntry": models.LogEntry,
    "LogContext": models.LogContext,
    "LogsResponse": models.LogsPage,
    "CancelResponse": models.CancelResult,
    "CreatedBatch": models.CreatedBatch,
    "Trajectory": models.Trajectory,
    "TrajectoryMessage": models.TrajectoryMessage,
    "LlmCall": models.LlmCall,
    "TokenUsage": models.TokenUsage,
    "GroupSummary": models.Group,
    "GroupTask": models.GroupTask,
    "Worker": models.Worker,
    "WorkerCapabilities": models.WorkerCapabilities,
    "WorkerPage": models.WorkerPage,
    "StoreStats": models.Stats,
    "Problem": models.Problem,
    "ProblemList": models.ProblemList,
    "HealthResponse": models.Health,
    "ExportRecord": models.Episode,
    "ChatMessage": models.ChatMessage,
    "NewTask": models.TaskSpec,
}
ENUMS = {
    "TaskStatus": models.TaskStatus,
    "LogLevel": models.LogLevel,
    "WorkerStatus": models.WorkerStatus,
    "TaskType": models.TaskType,
}


@pytest.fixture(scope="module")
def schemas(server) -> dict:
    """The component schemas the server serves (one store is enough, but the
    fixture is per store like every other)."""
    return httpx.get(f"{server.url}/openapi.json", timeout=10).json()["components"]["schemas"]


def _properties(schema: dict, schemas: dict) -> set:
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []) + schema.get("oneOf", []) + schema.get("anyOf", []):
        if "$ref" in part:
            part = schemas[part["$ref"].rsplit("/", 1)[-1]]
        names |= _properties(part, schemas)
    return names


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_documented_field_has_a_model_field(schemas: dict, name: str) -> None:
    fields = set(MODELS[name].model_fields)
    documented = _properties(schemas[name], schemas)
    assert documented, name
    assert documented <= fields, f"{name}: the server documents fields the model lacks"


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_every_documented_enum_value_is_a_member(schemas: dict, name: str) -> None:
    assert set(schemas[name]["enum"]) == {member.value for member in ENUMS[name]}


def test_a_newer_servers_fields_and_statuses_are_kept_not_refused() -> None:
    wire = {
        "id": "t1",
        "problem_id": "p",
        "status": "paused",  # a status this client does not know
        "parameters": {"max_steps": 3, "new_knob": True},
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00.5Z",
        "shiny_new_field": {"x": 1},
    }
    task = Task.model_validate(wire)
    assert task.status == "paused" and task.is_terminal  # unknown: not pending/running
    assert task.shiny_new_field == {"x": 1} and task.parameters.new_knob is True
    assert Task.model_validate({**wire, "status": "running"}).status is TaskStatus.RUNNING
    assert not is_terminal("pending") and is_terminal(TaskStatus.TIMEOUT)
