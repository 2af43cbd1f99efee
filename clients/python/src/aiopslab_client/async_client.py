"""The asyncio client, :class:`AsyncClient`: the same methods as
:class:`~aiopslab_client.Client`, awaited (and ``async for`` for the walks
and streams). Both send the calls that ``_requests`` describes and share the
retry, paging, waiting, SSE and export logic; only the I/O differs."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    List,
    Optional,
    Tuple,
    TypeVar,
    Union,
    overload,
)

import httpx
from typing_extensions import Concatenate, Literal, ParamSpec

from . import _requests
from ._export import JsonlFile, PathLike, cut_short, parse_episode
from ._paging import Pager
from ._requests import MAX_PAGE_SIZE, Call, bind
from ._transport import Attempts, ClientBase, build_request, error_from, parse_answer
from ._waiting import TaskRef, Waiter
from .models import Episode, LogEntry, Task
from .sse import AsyncLogStream, LogFollow

T = TypeVar("T")
P = ParamSpec("P")


async def _send_call(client: AsyncClient, call: Call[T]) -> T:
    return await client._call(call)


def _endpoint(builder: Callable[P, Call[T]]) -> Callable[Concatenate[AsyncClient, P], Awaitable[T]]:
    """An :class:`AsyncClient` coroutine method sending what ``builder`` describes."""
    return bind(builder, _send_call, "AsyncClient")


class AsyncClient(ClientBase):
    """An asyncio client of the aiopslab API; arguments as for
    :class:`~aiopslab_client.Client`.

    ::

        async with AsyncClient() as client:
            batch = await client.create_batch("misconfig_app_hotel_res-detection-1", count=8)
            done = await client.wait(batch.tasks)
    """

    _http_class = httpx.AsyncClient
    _http: httpx.AsyncClient

    async def aclose(self) -> None:
        """Closes the client's connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- sending ----------------------------------------------------------------------------------

    async def _send(self, call: Call[Any]) -> Tuple[httpx.Response, int]:
        """Sends ``call``, retrying as the policy allows; returns the answer
        (still open when ``call.stream``) and the number of attempts."""
        request = build_request(self._http, self._settings, call)
        attempts = Attempts(self._settings.retry, call, str(request.url))
        while True:
            attempts.started()
            try:
                response = await self._http.send(request, stream=call.stream)
            except httpx.TransportError as error:
                await asyncio.sleep(attempts.after_error(error))
                continue
            delay = attempts.after_status(response.status_code, response.headers)
            if delay is None:
                return response, attempts.count
            await response.aclose()
            await asyncio.sleep(delay)

    async def _call(self, call: Call[T]) -> T:
        response, attempts = await self._send(call)
        return parse_answer(response, call, attempts)

    @asynccontextmanager
    async def _stream(self, call: Call[Any]) -> AsyncIterator[httpx.Response]:
        response, attempts = await self._send(call)
        try:
            if response.is_error:
                await response.aread()
                raise error_from(response, call, attempts)
            yield response
        finally:
            await response.aclose()

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

    async def list(
        self, *, page_size: int = MAX_PAGE_SIZE, limit: Optional[int] = None, **filters: Any
    ) -> AsyncIterator[Task]:
        """``async for`` over every task that matches, as
        :meth:`Client.list <aiopslab_client.Client.list>`."""
        pager = Pager(filters, page_size, limit)
        call = pager.call()
        while call is not None:
            for task in pager.take(await self._call(call)):
                yield task
            call = pager.call()

    @overload
    def logs(
        self, task: TaskRef, *, follow: Literal[False] = False, **filters: Any
    ) -> Coroutine[Any, Any, List[LogEntry]]: ...

    @overload
    def logs(self, task: TaskRef, *, follow: Literal[True], **filters: Any) -> AsyncLogStream: ...

    def logs(
        self, task: TaskRef, *, follow: bool = False, **filters: Any
    ) -> Union[Coroutine[Any, Any, List[LogEntry]], AsyncLogStream]:
        """A task's log entries, as :meth:`Client.logs
        <aiopslab_client.Client.logs>`: ``await client.logs(id)`` for the list,
        ``async for entry in client.logs(id, follow=True)`` to follow it."""
        call = _requests.logs(task, follow=follow, **filters)
        if not follow:
            return self._call(call)
        state = LogFollow(call, self._settings.retry)
        return AsyncLogStream(self._follow(state), state)

    async def _follow(self, state: LogFollow) -> AsyncIterator[LogEntry]:
        while True:
            try:
                async with self._stream(state.call()) as response:
                    async for line in response.aiter_lines():
                        entry = state.feed(line)
                        if entry is not None:
                            yield entry
                        if state.finished:
                            return
                reason = "the stream closed before its end event"
            except httpx.TransportError as error:
                reason = f"{type(error).__name__}: {error}"
            await asyncio.sleep(state.reopen_delay(reason))

    async def wait(
        self,
        tasks: Union[TaskRef, Iterable[TaskRef]],
        *,
        timeout: Optional[float] = 3600.0,
        poll: float = 1.0,
    ) -> List[Task]:
        """Waits until every task is terminal, as :meth:`Client.wait
        <aiopslab_client.Client.wait>`."""
        waiter = Waiter(tasks, timeout, poll)
        while True:
            for call in waiter.round():
                waiter.record(await self._call(call))
            if waiter.done:
                return waiter.results()
            await asyncio.sleep(waiter.pause())

    async def export_lines(self, **filters: Any) -> AsyncIterator[str]:
        """The raw JSON lines of the export, streamed, as
        :meth:`Client.export_lines <aiopslab_client.Client.export_lines>`."""
        count = 0
        async with self._stream(_requests.export(**filters)) as response:
            try:
                async for line in response.aiter_lines():
                    if line:
                        count += 1
                        yield line
            except httpx.TransportError as error:
                raise cut_short(count, error) from error

    async def export(self, **filters: Any) -> AsyncIterator[Episode]:
        """The export's episodes as :class:`Episode` objects, streamed."""
        async for line in self.export_lines(**filters):
            yield parse_episode(line)

    async def export_to(self, path: PathLike, **filters: Any) -> int:
        """Writes the export to ``path`` as JSON Lines and returns the number
        of episodes, as :meth:`Client.export_to <aiopslab_client.Client.export_to>`."""
        with JsonlFile(path) as out:
            async for line in self.export_lines(**filters):
                out.write(line)
        return out.count
