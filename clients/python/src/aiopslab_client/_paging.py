"""Walking every page of ``GET /tasks``, shared by both clients.

The server pages its task listing by ``offset`` (it has no cursor for
``/tasks``; only the export has one), so a listing walked while tasks are
created or change status can shift under the walk. The pager asks for the
largest pages (100) to keep the window short, and drops a task the previous
page already returned, so a shift by a few tasks repeats none; a task that
moves out of a filtered listing mid-walk can still push another out of view.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set

from . import _requests
from ._requests import MAX_PAGE_SIZE, Call
from .models import Task, TaskPage


class Pager:
    """The state of one walk: which page to ask for next, and which tasks of
    an answer are new."""

    def __init__(
        self, filters: Dict[str, Any], page_size: int = MAX_PAGE_SIZE, limit: Optional[int] = None
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be 0 or more, got {limit}")
        self._filters = filters
        self._page_size = page_size
        self._remaining = limit
        self._offset = 0
        self._previous: Set[str] = set()
        self.done = limit == 0

    def call(self) -> Optional[Call[TaskPage]]:
        """The next page's request, or ``None`` when the walk is over."""
        if self.done:
            return None
        return _requests.list_page(**self._filters, limit=self._page_size, offset=self._offset)

    def take(self, page: TaskPage) -> List[Task]:
        """The tasks of ``page`` to hand out; moves the walk on."""
        tasks = [task for task in page.tasks if task.id not in self._previous]
        self._previous = {task.id for task in page.tasks}
        self._offset += len(page.tasks)
        if len(page.tasks) < min(page.limit, self._page_size) or not page.tasks:
            self.done = True
        if self._remaining is not None:
            tasks = tasks[: self._remaining]
            self._remaining -= len(tasks)
            if self._remaining == 0:
                self.done = True
        return tasks
