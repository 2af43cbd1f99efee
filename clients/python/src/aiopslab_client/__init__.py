"""aiopslab_client: a Python client of the aiopslab task API.

Submit AIOpsLab problem runs, follow their logs, wait for them, read their
trajectories and stream the episode export for RL training::

    from aiopslab_client import Client

    with Client("http://localhost:8000") as client:
        batch = client.create_batch("misconfig_app_hotel_res-detection-1", count=8,
                                    agent_config={"model": "gpt-4o-mini"})
        client.wait(batch.tasks)
        print(client.group(batch.group_id).rewards)
        client.export_to("episodes.jsonl", model="gpt-4o-mini")

:class:`AsyncClient` has the same methods for asyncio.
"""

from ._transport import RetryPolicy
from ._version import __version__
from .async_client import AsyncClient
from .client import Client
from .errors import (
    AiopslabError,
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    DecodeError,
    NotFoundError,
    PermissionDeniedError,
    StreamError,
    TransportError,
    UnavailableError,
    WaitTimeout,
)
from .models import (
    CancelResult,
    ChatMessage,
    CreatedBatch,
    Episode,
    ErrorDetails,
    Group,
    GroupTask,
    Health,
    LlmCall,
    LogContext,
    LogEntry,
    LogLevel,
    Problem,
    Stats,
    Task,
    TaskPage,
    TaskParameters,
    TaskResult,
    TaskSpec,
    Outcome,
    TaskStatus,
    TaskType,
    TokenUsage,
    Trajectory,
    TrajectoryMessage,
    Worker,
    WorkerCapabilities,
    WorkerStatus,
    is_terminal,
)
from .sse import AsyncLogStream, LogStream

__all__ = [
    "AiopslabError",
    "ApiError",
    "AsyncClient",
    "AsyncLogStream",
    "AuthenticationError",
    "BadRequestError",
    "CancelResult",
    "ChatMessage",
    "Client",
    "ConflictError",
    "CreatedBatch",
    "DecodeError",
    "Episode",
    "ErrorDetails",
    "Group",
    "GroupTask",
    "Health",
    "LlmCall",
    "LogContext",
    "LogEntry",
    "LogLevel",
    "LogStream",
    "NotFoundError",
    "PermissionDeniedError",
    "Problem",
    "RetryPolicy",
    "Stats",
    "StreamError",
    "Task",
    "TaskPage",
    "TaskParameters",
    "TaskResult",
    "TaskSpec",
    "Outcome",
    "TaskStatus",
    "TaskType",
    "TokenUsage",
    "Trajectory",
    "TrajectoryMessage",
    "TransportError",
    "UnavailableError",
    "WaitTimeout",
    "Worker",
    "WorkerCapabilities",
    "WorkerStatus",
    "__version__",
    "is_terminal",
]
