"""Typed models of the server's wire format (the JSON of ``/openapi.json``).

Every model accepts fields it does not know (``extra="allow"``): a newer server
that adds a field does not break an older client, and the extra field stays
readable as an attribute (``task.some_new_field``) and in ``model_dump()``.
Statuses and other enumerations likewise accept values this client does not
know yet: they parse to the enum member when there is one, and stay a plain
``str`` otherwise.

Ids (task, group, worker) are kept as the strings the server sends; times are
timezone-aware ``datetime`` objects.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Annotated


class Model(BaseModel):
    """Base of every wire model: unknown fields are kept, not refused."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class WireEnum(str, enum.Enum):
    """An enumeration of wire strings: compares equal to its value and
    prints as it (``str(TaskStatus.COMPLETED) == "completed"``)."""

    def __str__(self) -> str:
        return str(self.value)


class TaskStatus(WireEnum):
    """Where a task is in its lifecycle. The last four are terminal."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class Outcome(WireEnum):
    """What a terminal episode is for training: ``valid`` (ran and was
    evaluated, whatever the reward), ``aborted`` (infrastructure, never the
    policy: its reward is ``None``, not 0), ``timeout`` or ``cancelled``."""

    VALID = "valid"
    ABORTED = "aborted"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


#: The statuses nothing leaves.
TERMINAL_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED}
)


def is_terminal(status: Union[TaskStatus, str]) -> bool:
    """Whether ``status`` is terminal. A status this client does not know is
    taken as terminal unless it is ``pending`` or ``running`` (a newer
    server's new terminal status must not make :meth:`Client.wait` hang)."""
    return str(status) not in (TaskStatus.PENDING.value, TaskStatus.RUNNING.value)


class LogLevel(WireEnum):
    """Severity of a log entry, least severe first."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class WorkerStatus(WireEnum):
    """What a worker is doing, as the server last saw it."""

    IDLE = "idle"
    BUSY = "busy"
    OFFLINE = "offline"


class TaskType(WireEnum):
    """What an AIOpsLab problem asks the agent to do."""

    DETECTION = "detection"
    LOCALIZATION = "localization"
    ANALYSIS = "analysis"
    MITIGATION = "mitigation"


# An enum member when the value is known, else the plain string.
StatusField = Annotated[Union[TaskStatus, str], Field(union_mode="left_to_right")]
LevelField = Annotated[Union[LogLevel, str], Field(union_mode="left_to_right")]
WorkerStatusField = Annotated[Union[WorkerStatus, str], Field(union_mode="left_to_right")]
TaskTypeField = Annotated[Union[TaskType, str], Field(union_mode="left_to_right")]
OutcomeField = Annotated[Union["Outcome", str], Field(union_mode="left_to_right")]

JsonObject = Dict[str, Any]


class TaskParameters(Model):
    """A task's validated run parameters, every default applied."""

    agent_config: JsonObject = Field(default_factory=dict)
    max_steps: int = 30
    timeout_minutes: int = 30
    priority: int = 5
    callback_url: Optional[str] = None
    metadata: JsonObject = Field(default_factory=dict)
    backend_type: str = "default"
    max_retries: int = 0


class TaskResult(Model):
    """What a finished run produced: a short summary, metrics (with the
    evaluation's keys) and the agent's output (``solution``)."""

    logs: List[str] = Field(default_factory=list)
    metrics: JsonObject = Field(default_factory=dict)
    output: JsonObject = Field(default_factory=dict)


class ErrorDetails(Model):
    """Why a task failed, timed out or was requeued."""

    code: str
    message: str


class LogContext(Model):
    """Where in the episode a log entry was written."""

    step: Optional[int] = None
    action: Optional[str] = None
    details: Any = None


class LogEntry(Model):
    """One stored log line of a task. Ids increase in append order."""

    id: int
    task_id: str
    timestamp: datetime
    level: LevelField
    message: str
    context: LogContext = Field(default_factory=LogContext)


class Task(Model):
    """One task: an AIOpsLab problem run, as the server stores and serves it.

    ``logs`` is only set when the task was read with ``include_logs=True``.
    """

    id: str
    problem_id: str
    status: StatusField
    parameters: TaskParameters = Field(default_factory=TaskParameters)
    group_id: Optional[str] = None
    #: The aborted group member this task replaces (a refill); ``None`` otherwise.
    replaces: Optional[str] = None
    #: The experiment the task belongs to (fair share between experiments); ``None`` otherwise.
    experiment: Optional[str] = None
    worker_id: Optional[str] = None
    attempt: int = 0
    cancel_requested: bool = False
    created_at: datetime
    updated_at: datetime
    started_at: Optional[datetime] = None
    completed_at: Optional[datetime] = None
    lease_expires_at: Optional[datetime] = None
    result: Optional[TaskResult] = None
    error_details: Optional[ErrorDetails] = None
    logs: Optional[List[LogEntry]] = None

    @property
    def is_terminal(self) -> bool:
        """Whether the task has reached a status nothing leaves."""
        return is_terminal(self.status)


class TaskPage(Model):
    """One page of ``GET /tasks``. ``total`` counts every match; it is an
    estimate when ``total_is_estimate`` is true."""

    tasks: List[Task]
    total: int
    total_is_estimate: bool = False
    limit: int
    offset: int


class CreatedBatch(Model):
    """The answer to ``POST /tasks/batch``: the group and its tasks in
    request order; ``replayed`` when an earlier request with the same
    idempotency key created them."""

    group_id: Optional[str] = None
    tasks: List[Task]
    replayed: bool = False


class CancelResult(Model):
    """The answer to ``DELETE /tasks/{id}``: ``cancelled`` at once when the
    task was pending, or ``running`` with ``cancel_requested`` when its worker
    was told to stop it."""

    id: str
    status: StatusField
    cancel_requested: bool
    message: str


class LogsPage(Model):
    """The answer to ``GET /tasks/{id}/logs`` (without ``follow``)."""

    task_id: str
    logs: List[LogEntry]


class TrajectoryMessage(Model):
    """One message of an episode's conversation (``system``, ``user``,
    ``assistant`` or ``env``)."""

    role: str
    content: str


class TokenUsage(Model):
    """Token counts as the LLM endpoint reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class LlmCall(Model):
    """One call to the LLM endpoint: request, reply, usage, latency, and the
    token ids and log-probabilities when the endpoint returned them."""

    step: Optional[int] = None
    request: List[TrajectoryMessage] = Field(default_factory=list)
    response: str = ""
    model: Optional[str] = None
    sampling: JsonObject = Field(default_factory=dict)
    usage: Optional[TokenUsage] = None
    latency_ms: int = 0
    logprobs: Any = None
    token_ids: Any = None
    prompt_token_ids: Any = None
    #: The policy version that served the call (the task's ``agent_config.model_version``).
    model_version: Optional[int] = None


class Trajectory(Model):
    """The RL record of one episode: messages, LLM calls, the scalar reward
    (``None`` unless the outcome is ``valid``), AIOpsLab's raw evaluation,
    the outcome label and the policy version."""

    task_id: str
    messages: List[TrajectoryMessage] = Field(default_factory=list)
    llm_calls: List[LlmCall] = Field(default_factory=list)
    reward: Optional[float] = None
    evaluation: JsonObject = Field(default_factory=dict)
    metadata: JsonObject = Field(default_factory=dict)
    #: ``None`` while the task runs.
    outcome: Optional[OutcomeField] = None
    model_version: Optional[int] = None


class GroupTask(Model):
    """One task of a group, with its reward once it has one."""

    id: str
    problem_id: str
    status: StatusField
    reward: Optional[float] = None
    #: The aborted member this task replaces (a refill); ``None`` otherwise.
    replaces: Optional[str] = None


class Group(Model):
    """The answer to ``GET /groups/{group_id}``: a batch's tasks, statuses and
    rewards, for group-relative RL methods."""

    group_id: str
    total: int
    by_status: Dict[str, int] = Field(default_factory=dict)
    tasks: List[GroupTask] = Field(default_factory=list)
    #: Over the valid members only.
    mean_reward: Optional[float] = None
    #: Population variance over the valid members' rewards.
    reward_variance: Optional[float] = None
    rewards: List[float] = Field(default_factory=list)
    #: ``running``, then ``complete``, ``partial`` or ``failed``.
    status: Optional[str] = None
    size: Optional[int] = None
    min_valid: Optional[int] = None
    max_refills: Optional[int] = None
    #: Replacements of aborted members created so far.
    refills: Optional[int] = None
    valid: Optional[int] = None
    aborted: Optional[int] = None

    @property
    def is_finished(self) -> bool:
        """Whether every task of the group is terminal."""
        return all(is_terminal(task.status) for task in self.tasks)


class WorkerCapabilities(Model):
    """What a worker can run."""

    max_parallel_tasks: int = 1
    supported_problems: Optional[List[str]] = None


class Worker(Model):
    """A registered worker."""

    id: str
    backend_type: str
    status: WorkerStatusField
    capabilities: WorkerCapabilities = Field(default_factory=WorkerCapabilities)
    metadata: JsonObject = Field(default_factory=dict)
    current_task_id: Optional[str] = None
    tasks_completed: int = 0
    tasks_failed: int = 0
    instance_id: Optional[str] = None
    registered_at: datetime
    last_heartbeat: datetime


class WorkerPage(Model):
    """The answer to ``GET /workers``."""

    workers: List[Worker]
    total: int


class Stats(Model):
    """The answer to ``GET /stats``: tasks per status, pending tasks per
    backend type, workers per status."""

    tasks_by_status: Dict[str, int] = Field(default_factory=dict)
    queue_depth_by_backend: Dict[str, int] = Field(default_factory=dict)
    workers_by_status: Dict[str, int] = Field(default_factory=dict)


class Problem(Model):
    """One entry of the AIOpsLab problem catalog."""

    id: str
    application: str
    fault: str
    task_type: TaskTypeField


class ProblemList(Model):
    """The answer to ``GET /problems``."""

    problems: List[Problem]
    total: int


class Health(Model):
    """The answer to ``GET /health``."""

    status: str
    store: str
    version: str


class ChatMessage(Model):
    """One chat message in OpenAI format (AIOpsLab's environment turns are
    ``user``)."""

    role: str
    content: str


class Episode(Model):
    """One line of ``GET /trajectories/export``: an episode in OpenAI chat
    format with its reward, ready for an RL trainer."""

    task_id: str
    problem_id: str
    task_type: Optional[TaskTypeField] = None
    status: StatusField
    outcome: Optional[OutcomeField] = None
    messages: List[ChatMessage] = Field(default_factory=list)
    #: ``None`` unless the outcome is ``valid``: an aborted run is never scored 0.
    reward: Optional[float] = None
    evaluation: JsonObject = Field(default_factory=dict)
    agent_config: JsonObject = Field(default_factory=dict)
    metadata: JsonObject = Field(default_factory=dict)
    group_id: Optional[str] = None
    model_version: Optional[int] = None


class TaskSpec(Model):
    """A task request, as ``POST /tasks`` and each entry of
    ``POST /tasks/batch`` take it. Only the fields that are set are sent, so
    the server applies its own defaults.

    Unlike the response models, a spec refuses unknown fields, as the server
    does (it answers 400 naming the field).
    """

    model_config = ConfigDict(extra="forbid")

    problem_id: str
    agent_config: Optional[JsonObject] = None
    max_steps: Optional[int] = None
    timeout_minutes: Optional[int] = None
    priority: Optional[int] = None
    callback_url: Optional[str] = None
    metadata: Optional[JsonObject] = None
    backend_type: Optional[str] = None
    max_retries: Optional[int] = None
    experiment: Optional[str] = None

    def to_wire(self) -> JsonObject:
        """The JSON object sent: the fields that were set, and no others."""
        return self.model_dump(exclude_none=True)
