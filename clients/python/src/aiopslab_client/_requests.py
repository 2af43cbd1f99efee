"""The request-description layer both clients share.

Each endpoint is described once, here, by a *builder*: a plain function that
checks its arguments and returns a :class:`Call` (method, path, query, body,
headers, whether a retry is safe, and how to parse the answer). The sync
:class:`~aiopslab_client.Client` and the asyncio
:class:`~aiopslab_client.AsyncClient` only send calls; :func:`bind` turns a
builder into a method of either, keeping its signature and docstring.

Nothing here does I/O.
"""

from __future__ import annotations

import enum
import functools
import inspect
import json
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union
from urllib.parse import quote

from typing_extensions import Concatenate, ParamSpec

from .models import (
    CancelResult,
    CreatedBatch,
    Group,
    Health,
    LogEntry,
    LogLevel,
    LogsPage,
    Outcome,
    Problem,
    ProblemList,
    Stats,
    Task,
    TaskPage,
    TaskSpec,
    TaskStatus,
    TaskType,
    Trajectory,
    Worker,
    WorkerPage,
    WorkerStatus,
)

T = TypeVar("T")
P = ParamSpec("P")

QueryValue = Union[str, int, float, bool, datetime, enum.Enum, None]
Query = Tuple[Tuple[str, str], ...]
Headers = Tuple[Tuple[str, str], ...]

#: The server's largest ``GET /tasks`` page.
MAX_PAGE_SIZE = 100
#: The server's largest batch (``POST /tasks/batch``).
MAX_BATCH_SIZE = 1000


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request to send and how to read its answer.

    ``body`` is encoded once, so every retry sends the very same bytes (the
    server fingerprints the body of an ``Idempotency-Key`` request).
    ``retry_safe`` says whether the transport may send it again after a
    connection error or a 503: true for GET and DELETE, and for a POST that
    carries an ``Idempotency-Key``.
    """

    method: str
    path: str
    query: Query = ()
    body: Optional[bytes] = None
    headers: Headers = ()
    parse: Callable[[Any], T] = field(default=_identity)
    retry_safe: bool = True
    stream: bool = False


def encode_value(value: QueryValue) -> str:
    """A query-string value as the server reads it: enums by value, booleans
    as ``true``/``false``, datetimes in RFC 3339 (a naive one is taken as
    UTC)."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat()
    return str(value)


def query(**params: QueryValue) -> Query:
    """The query string of ``params``, leaving out those that are ``None``."""
    return tuple((name, encode_value(value)) for name, value in params.items() if value is not None)


def segment(value: str) -> str:
    """One path segment, percent-encoded (an id can never reach another route)."""
    return quote(str(value), safe="")


def task_id_of(task: Union[str, Task]) -> str:
    """The id of a task given as a :class:`Task` or as its id."""
    return task.id if isinstance(task, Task) else str(task)


def _json_body(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _plain(value: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    return None if value is None else dict(value)


def _post(path: str, body: Any, parse: Callable[[Any], T], idempotency_key: Optional[str]) -> Call[T]:
    headers: Headers = (("Content-Type", "application/json"),)
    if idempotency_key is not None:
        headers += (("Idempotency-Key", idempotency_key),)
    return Call(
        "POST",
        path,
        body=_json_body(body),
        headers=headers,
        parse=parse,
        retry_safe=idempotency_key is not None,
    )


# --- tasks ------------------------------------------------------------------------------------------


def create(
    problem_id: str,
    *,
    agent_config: Optional[Mapping[str, Any]] = None,
    max_steps: Optional[int] = None,
    timeout_minutes: Optional[int] = None,
    priority: Optional[int] = None,
    callback_url: Optional[str] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    backend_type: Optional[str] = None,
    max_retries: Optional[int] = None,
    experiment: Optional[str] = None,
    idempotency_key: Optional[str] = None,
) -> Call[Task]:
    """Submits one task (``POST /tasks``) and returns it, ``pending``.

    Args:
        problem_id: the AIOpsLab problem (see :meth:`problems`); an id outside
            the catalog is accepted and fails at run time.
        agent_config: how to build the agent, e.g. ``{"model": "gpt-4o",
            "temperature": 0.7}`` (never a secret: ``api_key_env`` names the
            worker's environment variable).
        max_steps: agent steps allowed, 1-1000 (server default 30).
        timeout_minutes: wall-clock limit, 1-180 (30).
        priority: 0-10, higher runs first (5).
        callback_url: an http(s) URL the server POSTs the task to when it ends.
        metadata: free-form JSON kept with the task (and in the export).
        backend_type: only workers of this backend type run it (``"default"``).
        max_retries: requeues allowed after an infrastructure failure, 0-10 (0).
        experiment: the experiment the task belongs to, 1-128 of ``A-Z a-z
            0-9 . _ -``: the claim shares the fleet fairly between experiments.
        idempotency_key: 1-255 visible ASCII characters. The same key with the
            same request creates nothing twice (the server replays the first
            answer); with a different request it is a 409
            :class:`~aiopslab_client.ConflictError`. **Only a create that
            carries a key is retried** after a connection error or a 503.

    Raises:
        BadRequestError: a field is invalid (``err.field`` names it).
    """
    spec = TaskSpec(
        problem_id=problem_id,
        agent_config=_plain(agent_config),
        max_steps=max_steps,
        timeout_minutes=timeout_minutes,
        priority=priority,
        callback_url=callback_url,
        metadata=_plain(metadata),
        backend_type=backend_type,
        max_retries=max_retries,
        experiment=experiment,
    )
    return _post("/tasks", spec.to_wire(), Task.model_validate, idempotency_key)


TaskRequest = Union[str, TaskSpec, Mapping[str, Any]]


def _spec_of(task: TaskRequest) -> Dict[str, Any]:
    if isinstance(task, TaskSpec):
        return task.to_wire()
    if isinstance(task, str):
        return TaskSpec(problem_id=task).to_wire()
    return TaskSpec.model_validate(dict(task)).to_wire()


def create_batch(
    tasks: Union[TaskRequest, Sequence[TaskRequest]],
    count: Optional[int] = None,
    *,
    idempotency_key: Optional[str] = None,
    min_valid: Optional[int] = None,
    max_refills: Optional[int] = None,
    **fields: Any,
) -> Call[CreatedBatch]:
    """Submits many tasks atomically, as one group (``POST /tasks/batch``).

    Two shapes, as the server takes them:

    * ``create_batch("problem-id", count=8, agent_config={...})``, or a
      :class:`TaskSpec` / dict with ``count``: that task ``count`` times
      (1-1000), e.g. a group for a group-relative RL method. Keyword
      arguments other than ``idempotency_key`` are task fields (as for
      :meth:`create`) and only go with a problem id.
    * ``create_batch([spec, spec, ...])``: these tasks (specs, dicts or problem
      ids), in order.

    Either every task is created or none is (a 400 names ``tasks[i].field``).
    The answer has the ``group_id`` that :meth:`group` reads back.
    ``idempotency_key`` works as for :meth:`create`, and **only a batch that
    carries a key is retried** after a connection error or a 503.

    ``min_valid`` (1 to the number of tasks; default: all) and ``max_refills``
    (0-1000; default 0) ask the server to replace members that abort (status
    ``failed``) with copies, while the group lacks ``min_valid`` members that
    are valid or still running, up to ``max_refills`` times.
    """
    if isinstance(tasks, (str, TaskSpec, Mapping)):
        if count is None:
            raise ValueError("count is required with a single task (or pass a list of tasks)")
        if fields and not isinstance(tasks, str):
            raise ValueError("task fields as keyword arguments go with a problem id only")
        spec = TaskSpec(problem_id=tasks, **fields).to_wire() if isinstance(tasks, str) else _spec_of(tasks)
        body: Dict[str, Any] = {"task": spec, "count": count}
    else:
        if count is not None or fields:
            raise ValueError("count and task fields go with a single task, not with a list of tasks")
        body = {"tasks": [_spec_of(task) for task in tasks]}
    if min_valid is not None:
        body["min_valid"] = min_valid
    if max_refills is not None:
        body["max_refills"] = max_refills
    return _post("/tasks/batch", body, CreatedBatch.model_validate, idempotency_key)


def get(task: Union[str, Task], *, include_logs: bool = False) -> Call[Task]:
    """Reads one task (``GET /tasks/{id}``); ``include_logs=True`` fills
    ``task.logs``.

    Raises:
        NotFoundError: no such task.
    """
    return Call(
        "GET",
        f"/tasks/{segment(task_id_of(task))}",
        query=query(include_logs=True if include_logs else None),
        parse=Task.model_validate,
    )


def list_page(
    *,
    status: Union[TaskStatus, str, None] = None,
    problem_id: Optional[str] = None,
    worker_id: Optional[str] = None,
    backend_type: Optional[str] = None,
    group_id: Optional[str] = None,
    experiment: Optional[str] = None,
    sort: Optional[str] = None,
    limit: Optional[int] = None,
    offset: Optional[int] = None,
) -> Call[TaskPage]:
    """Reads one page of the task listing (``GET /tasks``): ``limit`` 1-100
    (server default 20), ``offset``, ``sort`` one of ``created_at``,
    ``-created_at`` (default), ``priority``, ``-priority``. :meth:`list` walks
    every page for you."""
    return Call(
        "GET",
        "/tasks",
        query=query(
            status=status,
            problem_id=problem_id,
            worker_id=worker_id,
            backend_type=backend_type,
            group_id=group_id,
            experiment=experiment,
            sort=sort,
            limit=limit,
            offset=offset,
        ),
        parse=TaskPage.model_validate,
    )


def cancel(task: Union[str, Task]) -> Call[CancelResult]:
    """Cancels a task (``DELETE /tasks/{id}``): a pending task is
    ``cancelled`` at once; a running one's worker is told to stop it and
    reports it ``cancelled``. Retried after a connection error or a 503.

    Raises:
        ConflictError: the task is already terminal (``already_terminal``).
        NotFoundError: no such task.
    """
    return Call("DELETE", f"/tasks/{segment(task_id_of(task))}", parse=CancelResult.model_validate)


def _logs_of(value: Any) -> List[LogEntry]:
    return LogsPage.model_validate(value).logs


def logs(
    task: Union[str, Task],
    *,
    level: Union[LogLevel, str, None] = None,
    since: Union[datetime, str, None] = None,
    after_id: Optional[int] = None,
    limit: Optional[int] = None,
    follow: bool = False,
) -> Call[List[LogEntry]]:
    """``GET /tasks/{id}/logs``: the entries at ``level`` or more severe,
    ``since`` an instant, with an id above ``after_id``, at most ``limit``;
    with ``follow`` the Server-Sent Events stream."""
    return Call(
        "GET",
        f"/tasks/{segment(task_id_of(task))}/logs",
        query=query(
            level=level, since=since, after_id=after_id, limit=limit, follow=True if follow else None
        ),
        parse=_logs_of,
        stream=follow,
    )


def trajectory(task: Union[str, Task]) -> Call[Trajectory]:
    """Reads a task's trajectory (``GET /tasks/{id}/trajectory``): every
    message, every LLM call (usage, latency, token ids and log-probabilities
    when the endpoint gave them), the reward and the raw evaluation.

    Raises:
        NotFoundError: no such task, or no trajectory saved yet.
    """
    return Call("GET", f"/tasks/{segment(task_id_of(task))}/trajectory", parse=Trajectory.model_validate)


def group(group_id: str) -> Call[Group]:
    """Reads a batch group (``GET /groups/{group_id}``): its tasks, their
    statuses and rewards, and the mean reward.

    Raises:
        NotFoundError: no task belongs to this group.
    """
    return Call("GET", f"/groups/{segment(group_id)}", parse=Group.model_validate)


def export(
    *,
    status: Union[TaskStatus, str, None] = None,
    problem_id: Optional[str] = None,
    task_type: Union[TaskType, str, None] = None,
    model: Optional[str] = None,
    metadata: Union[Tuple[str, str], Mapping[str, str], str, None] = None,
    created_after: Union[datetime, str, None] = None,
    created_before: Union[datetime, str, None] = None,
    outcome: Union[Outcome, str, Sequence[Union[Outcome, str]], None] = None,
    model_version: Optional[int] = None,
    min_model_version: Optional[int] = None,
    after: Optional[str] = None,
    limit: Optional[int] = None,
) -> Call[None]:
    """``GET /trajectories/export``: the episodes (tasks with a trajectory)
    that match, oldest first, one JSON line each.

    Only ``valid`` episodes unless asked: ``outcome`` takes one outcome, a
    list of them, or ``"all"`` (a ``status`` filter also replaces the
    default). ``model_version`` keeps one policy version,
    ``min_model_version`` that version and later ones.

    ``metadata`` filters on one string value of the task's metadata, given as
    ``{"key": "value"}``, ``("key", "value")`` or ``"key:value"``.
    ``after`` is ``<created_at>,<task id>`` of an episode to resume after;
    ``limit`` caps the number of lines.
    """
    return Call(
        "GET",
        "/trajectories/export",
        query=query(
            status=status,
            problem_id=problem_id,
            task_type=task_type,
            model=model,
            metadata=_metadata_filter(metadata),
            created_after=created_after,
            created_before=created_before,
            outcome=_outcome_filter(outcome),
            model_version=model_version,
            min_model_version=min_model_version,
            after=after,
            limit=limit,
        ),
        stream=True,
    )


def _outcome_filter(value: Union[Outcome, str, Sequence[Union[Outcome, str]], None]) -> Optional[str]:
    if value is None or isinstance(value, str):
        return None if value is None else str(value)
    return ",".join(str(outcome) for outcome in value)


def _metadata_filter(value: Union[Tuple[str, str], Mapping[str, str], str, None]) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    pairs = list(value.items()) if isinstance(value, Mapping) else [tuple(value)]
    if len(pairs) != 1:
        raise ValueError("the export filters on one metadata key:value pair at a time")
    ((key, wanted),) = pairs
    return f"{key}:{wanted}"


# --- fleet, catalog, operations -----------------------------------------------------------------------


def _workers_of(value: Any) -> List[Worker]:
    return WorkerPage.model_validate(value).workers


def workers(
    *, status: Union[WorkerStatus, str, None] = None, backend_type: Optional[str] = None
) -> Call[List[Worker]]:
    """Lists the registered workers (``GET /workers``), by id, optionally
    only those in ``status`` or of ``backend_type``."""
    return Call("GET", "/workers", query=query(status=status, backend_type=backend_type), parse=_workers_of)


def worker(worker_id: str) -> Call[Worker]:
    """Reads one worker (``GET /workers/{id}``).

    Raises:
        NotFoundError: no such worker.
    """
    return Call("GET", f"/workers/{segment(worker_id)}", parse=Worker.model_validate)


def _problems_of(value: Any) -> List[Problem]:
    return ProblemList.model_validate(value).problems


def problems(
    *, task_type: Union[TaskType, str, None] = None, application: Optional[str] = None
) -> Call[List[Problem]]:
    """Lists the AIOpsLab problem catalog (``GET /problems``), optionally only
    one ``task_type`` or ``application`` (``HotelReservation``, ...)."""
    return Call(
        "GET", "/problems", query=query(task_type=task_type, application=application), parse=_problems_of
    )


def stats() -> Call[Stats]:
    """Reads the counts (``GET /stats``): tasks per status, pending tasks per
    backend type, workers per status."""
    return Call("GET", "/stats", parse=Stats.model_validate)


def health() -> Call[Health]:
    """Reads ``GET /health`` (never authenticated): the server is up and its
    store answers.

    Raises:
        UnavailableError: the store does not answer (after the retries).
    """
    return Call("GET", "/health", parse=Health.model_validate)


# --- turning builders into client methods ------------------------------------------------------------


def bind(
    builder: Callable[P, Call[T]], send: Callable[[Any, Call[T]], Any], owner: str
) -> Callable[Concatenate[Any, P], Any]:
    """A method of the class ``owner`` made from ``builder``: it builds the
    call and hands it to ``send(client, call)``. The method keeps the builder's name, docstring
    and parameters (with ``self`` first), so ``help()`` and editors show it
    as if it were written out; when ``send`` is a coroutine function the
    method is one too."""
    if inspect.iscoroutinefunction(send):

        async def method(self: Any, /, *args: Any, **kwargs: Any) -> Any:
            return await send(self, builder(*args, **kwargs))

    else:

        def method(self: Any, /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            return send(self, builder(*args, **kwargs))

    functools.update_wrapper(method, builder, assigned=("__name__", "__doc__"))
    del method.__wrapped__  # type: ignore[attr-defined]
    method.__qualname__ = f"{owner}.{builder.__name__}"
    signature = inspect.signature(builder)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_param, *signature.parameters.values()],
        return_annotation=_answer_type(builder),
    )
    return method


def _answer_type(builder: Callable[..., Call[Any]]) -> Any:
    """``T`` of a builder that returns ``Call[T]``."""
    returned = typing.get_type_hints(builder).get("return")
    args = typing.get_args(returned)
    return args[0] if args else inspect.Signature.empty
