"""The synchronous client, :class:`Client`."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple, TypeVar, Union, overload

import httpx
from typing_extensions import Concatenate, Literal, ParamSpec

from . import _requests
from ._export import JsonlFile, PathLike, cut_short, parse_episode
from ._paging import Pager
from ._requests import MAX_PAGE_SIZE, Call, bind
from ._transport import Attempts, ClientBase, build_request, error_from, parse_answer
from ._waiting import TaskRef, Waiter
from .models import Episode, LogEntry, Task
from .sse import LogFollow, LogStream

T = TypeVar("T")
P = ParamSpec("P")


def _endpoint(builder: Callable[P, Call[T]]) -> Callable[Concatenate[Client, P], T]:
    """A :class:`Client` method sending what ``builder`` describes."""
    return bind(builder, lambda client, call: client._call(call), "Client")


class Client(ClientBase):
    """A synchronous client of the aiopslab API.

    Args:
        base_url: the server, e.g. ``http://localhost:8000``; default the
            ``AIOPSLAB_URL`` environment variable, else ``http://localhost:8000``.
        token: the client token (sent as ``Authorization: Bearer``); default
            ``AIOPSLAB_CLIENT_TOKEN``. It never appears in a repr, an exception
            or a log line.
        timeout: seconds per request (or an ``httpx.Timeout``); event streams
            get a read timeout of at least 45 s, above the server's keep-alives.
        retries: how many times a request safe to repeat (GET, DELETE, a POST
            with an idempotency key) is retried after a connection error or a
            503, or a :class:`RetryPolicy` for the backoff too.

    Use it as a context manager, or call :meth:`close`, to release its
    connections::

        with Client() as client:
            task = client.create("misconfig_app_hotel_res-detection-1", agent_config={"model": "gpt-4o"})
            (done,) = client.wait(task)
    """

    _http_class = httpx.Client
    _http: httpx.Client

    def close(self) -> None:
        """Closes the client's connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- sending ----------------------------------------------------------------------------------

    def _send(self, call: Call[Any]) -> Tuple[httpx.Response, int]:
        """Sends ``call``, retrying as the policy allows; returns the answer
        (still open when ``call.stream``) and the number of attempts."""
        request = build_request(self._http, self._settings, call)
        attempts = Attempts(self._settings.retry, call, str(request.url))
        while True:
            attempts.started()
            try:
                response = self._http.send(request, stream=call.stream)
            except httpx.TransportError as error:
                time.sleep(attempts.after_error(error))
                continue
            delay = attempts.after_status(response.status_code, response.headers)
            if delay is None:
                return response, attempts.count
            response.close()
            time.sleep(delay)

    def _call(self, call: Call[T]) -> T:
        response, attempts = self._send(call)
        return parse_answer(response, call, attempts)

    @contextmanager
    def _stream(self, call: Call[Any]) -> Iterator[httpx.Response]:
        response, attempts = self._send(call)
        try:
            if response.is_error:
                response.read()
                raise error_from(response, call, attempts)
            yield response
        finally:
            response.close()

    # --- one request each (described once in _requests) ---------------------------------------------

    create = _endpoint(_requests.create)
    create_batch = _endpoint(_requests.create_batch)
    get = _endpoint(_requests.get)
    list_page = _endpoint(_requests.list_page)
    cancel = _endpoint(_requests.cancel)
    trajectory = _endpoint(_requests.trajectory)
    group = _endpoint(_requests.group)
    workers = _endpoint(_requests.workers)
    worker = _endpoint(_requests.worker)
    problems = _endpoint(_requests.problems)
    stats = _endpoint(_requests.stats)
    health = _endpoint(_requests.health)

    # --- walks and streams ------------------------------------------------------------------------

    def list(
        self, *, page_size: int = MAX_PAGE_SIZE, limit: Optional[int] = None, **filters: Any
    ) -> Iterator[Task]:
        """Iterates over every task that matches, fetching pages lazily.

        ``filters`` are those of :meth:`list_page` (``status``,
        ``problem_id``, ``worker_id``, ``backend_type``, ``group_id``,
        ``sort``); ``limit`` stops after that many tasks. The server pages
        ``/tasks`` by offset, so a listing that changes while it is walked may
        shift (see ``aiopslab_client._paging``).
        """
        pager = Pager(filters, page_size, limit)
        call = pager.call()
        while call is not None:
            yield from pager.take(self._call(call))
            call = pager.call()

    @overload
    def logs(self, task: TaskRef, *, follow: Literal[False] = False, **filters: Any) -> List[LogEntry]: ...

    @overload
    def logs(self, task: TaskRef, *, follow: Literal[True], **filters: Any) -> LogStream: ...

    def logs(
        self, task: TaskRef, *, follow: bool = False, **filters: Any
    ) -> Union[List[LogEntry], LogStream]:
        """A task's log entries in append order.

        ``filters``: ``level`` (this level or more severe), ``since`` (an
        instant), ``after_id``, ``limit``. With ``follow=True`` returns a
        :class:`LogStream` over the Server-Sent Events of
        ``GET /tasks/{id}/logs?follow=true``: entries as they are written,
        ending when the task ends (``stream.status`` is then its final
        status); a broken or closed stream is reopened where it left off.
        """
        call = _requests.logs(task, follow=follow, **filters)
        if not follow:
            return self._call(call)
        state = LogFollow(call, self._settings.retry)
        return LogStream(self._follow(state), state)

    def _follow(self, state: LogFollow) -> Iterator[LogEntry]:
        while True:
            try:
                with self._stream(state.call()) as response:
                    for line in response.iter_lines():
                        entry = state.feed(line)
                        if entry is not None:
                            yield entry
                        if state.finished:
                            return
                reason = "the stream closed before its end event"
            except httpx.TransportError as error:
                reason = f"{type(error).__name__}: {error}"
            time.sleep(state.reopen_delay(reason))

    def wait(
        self,
        tasks: Union[TaskRef, Iterable[TaskRef]],
        *,
        timeout: Optional[float] = 3600.0,
        poll: float = 1.0,
    ) -> List[Task]:
        """Waits until every task (ids or :class:`Task` objects) is terminal
        and returns them, in the order given; ``timeout=None`` waits forever.

        Raises:
            WaitTimeout: (a ``TimeoutError``) past ``timeout`` seconds; its
                ``unfinished`` lists the ids not terminal yet.
        """
        waiter = Waiter(tasks, timeout, poll)
        while True:
            for call in waiter.round():
                waiter.record(self._call(call))
            if waiter.done:
                return waiter.results()
            time.sleep(waiter.pause())

    def export_lines(self, **filters: Any) -> Iterator[str]:
        """The raw JSON lines of ``GET /trajectories/export``, streamed: one
        episode per line, oldest first, never the whole dataset in memory.

        ``filters``: ``status``, ``problem_id``, ``task_type``, ``model``,
        ``metadata`` (``{"key": "value"}``), ``created_after``,
        ``created_before``, ``outcome`` (default: ``valid`` episodes only;
        a list, or ``"all"``), ``model_version``, ``min_model_version``,
        ``after``, ``limit``.

        Raises:
            StreamError: the stream broke mid-way (it is not resumed: an
                export line carries no cursor).
        """
        count = 0
        with self._stream(_requests.export(**filters)) as response:
            try:
                for line in response.iter_lines():
                    if line:
                        count += 1
                        yield line
            except httpx.TransportError as error:
                raise cut_short(count, error) from error

    def export(self, **filters: Any) -> Iterator[Episode]:
        """The episodes of ``GET /trajectories/export`` as :class:`Episode`
        objects, streamed (filters as for :meth:`export_lines`)."""
        for line in self.export_lines(**filters):
            yield parse_episode(line)

    def export_to(self, path: PathLike, **filters: Any) -> int:
        """Writes the export to ``path`` as JSON Lines (filters as for
        :meth:`export_lines`) and returns the number of episodes. The file
        appears only once the export is complete."""
        with JsonlFile(path) as out:
            for line in self.export_lines(**filters):
                out.write(line)
        return out.count
