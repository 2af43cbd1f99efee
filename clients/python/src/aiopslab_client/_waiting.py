"""Waiting for tasks to end, shared by both clients.

Each polling round reads the unfinished tasks one by one, in the order they
were given, and stops at the first that is still pending or running (it has
to be waited for anyway): waiting for ``n`` tasks costs about ``n`` reads plus
one per round, not ``n`` per round.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Union

from . import _requests
from ._requests import Call, task_id_of
from .errors import WaitTimeout
from .models import Task

TaskRef = Union[str, Task]


def ids_of(tasks: Union[TaskRef, Iterable[TaskRef]]) -> List[str]:
    """The distinct task ids of ``tasks`` (one task or many), in order."""
    if isinstance(tasks, (str, Task)):
        tasks = [tasks]
    return list(dict.fromkeys(task_id_of(task) for task in tasks))


class Waiter:
    """The state of one wait: the tasks still unfinished, the finished ones,
    and the deadline."""

    def __init__(
        self,
        tasks: Union[TaskRef, Iterable[TaskRef]],
        timeout: Optional[float],
        poll: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if poll <= 0:
            raise ValueError(f"poll must be positive, got {poll}")
        self._ids = ids_of(tasks)
        self._pending: Dict[str, None] = dict.fromkeys(self._ids)
        self._finished: Dict[str, Task] = {}
        self._timeout = timeout
        self._poll = poll
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self._stalled = False

    @property
    def done(self) -> bool:
        """Whether every task is terminal."""
        return not self._pending

    def round(self) -> Iterator[Call[Task]]:
        """The reads of one polling round; :meth:`record` each answer."""
        self._stalled = False
        while self._pending and not self._stalled:
            yield _requests.get(next(iter(self._pending)))

    def record(self, task: Task) -> None:
        """Takes the answer of one read of :meth:`round`."""
        if task.is_terminal:
            self._pending.pop(task.id, None)
            self._finished[task.id] = task
        else:
            self._stalled = True

    def results(self) -> List[Task]:
        """The finished tasks, in the order they were asked for."""
        return [self._finished[task_id] for task_id in self._ids if task_id in self._finished]

    def pause(self) -> float:
        """Seconds to sleep before the next round; raises
        :class:`WaitTimeout` (naming the unfinished tasks) past the deadline."""
        if self._deadline is None:
            return self._poll
        left = self._deadline - self._clock()
        if left <= 0:
            raise WaitTimeout(list(self._pending), self.results(), float(self._timeout or 0))
        return min(self._poll, left)
