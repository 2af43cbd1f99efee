"""Server-Sent Events: the decoder, and the state of following a task's log.

``GET /tasks/{id}/logs?follow=true`` answers ``text/event-stream``: one
``log`` event per entry (``data`` = the entry as JSON, ``id`` = the entry
id), then one ``end`` event whose data is the task's terminal status, after
which the server closes the stream. An ``error`` event (data = why) stops the
stream. When the server shuts down it closes the stream without an ``end``
event; :class:`LogFollow` then reopens it with ``Last-Event-ID`` so that no
entry is lost or repeated.

Nothing here does I/O: the clients feed lines in and act on what comes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator, List, Optional

from ._requests import Call
from ._transport import RetryPolicy, logger
from .errors import StreamError
from .models import LogEntry, StatusField, TaskStatus


@dataclass
class ServerSentEvent:
    """One event of a ``text/event-stream``."""

    event: str = "message"
    data: str = ""
    id: Optional[str] = None
    retry: Optional[int] = None


class SSEDecoder:
    """An incremental ``text/event-stream`` decoder (the WHATWG rules), fed
    one line at a time, without its line ending."""

    def __init__(self) -> None:
        self._event = ""
        self._data: List[str] = []
        self._id: Optional[str] = None
        self._retry: Optional[int] = None

    def feed(self, line: str) -> Optional[ServerSentEvent]:
        """Takes one line; returns the event a blank line completes."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment: the server's keep-alive
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> Optional[ServerSentEvent]:
        if not self._data:  # no data: nothing to dispatch (the spec's rule)
            self._event, self._retry = "", None
            return None
        event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id, self._retry)
        self._event, self._data, self._retry = "", [], None
        return event


class LogFollow:
    """Following one task's log across reconnections.

    The client opens :meth:`call`, feeds every line of the answer to
    :meth:`feed` (which returns each log entry) until :attr:`finished`; when
    the stream breaks or closes early it calls :meth:`reopen_delay` and opens
    :meth:`call` again, which resumes after the last entry seen.
    """

    def __init__(self, call: Call[Any], policy: RetryPolicy) -> None:
        self._call = call
        self._policy = policy
        self._decoder = SSEDecoder()
        self._failures = 0
        self.last_event_id: Optional[str] = None
        #: The task's terminal status, once the ``end`` event came.
        self.status: Optional[StatusField] = None

    @property
    def finished(self) -> bool:
        """Whether the ``end`` event came."""
        return self.status is not None

    def call(self) -> Call[Any]:
        """The request that (re)opens the stream."""
        self._decoder = SSEDecoder()
        if self.last_event_id is None:
            return self._call
        headers = tuple(h for h in self._call.headers if h[0].lower() != "last-event-id")
        return Call(
            self._call.method,
            self._call.path,
            query=self._call.query,
            headers=headers + (("Last-Event-ID", self.last_event_id),),
            parse=self._call.parse,
            stream=True,
        )

    def feed(self, line: str) -> Optional[LogEntry]:
        """Takes one line of the stream; returns the entry a ``log`` event
        carries, records the ``end`` status, raises :class:`StreamError` on an
        ``error`` event."""
        event = self._decoder.feed(line)
        if event is None:
            return None
        if event.event == "log":
            entry = LogEntry.model_validate_json(event.data)
            self.last_event_id = event.id if event.id is not None else str(entry.id)
            self._failures = 0
            return entry
        if event.event == "end":
            status = event.data.strip()
            try:
                self.status = TaskStatus(status)
            except ValueError:
                self.status = status
            return None
        if event.event == "error":
            raise StreamError(f"the server stopped the log stream: {event.data}")
        return None  # an event this client does not know

    def reopen_delay(self, reason: str) -> float:
        """The wait before reopening a stream that broke (``reason``) or
        closed before its ``end``; raises :class:`StreamError` after
        ``policy.retries`` reopenings in a row that brought no entry."""
        self._failures += 1
        if self._failures > self._policy.retries:
            raise StreamError(
                f"the log stream of {self._call.path} stopped {self._failures} times in a row "
                f"without an end event ({reason})"
            )
        delay = self._policy.delay(self._failures)
        logger.warning(
            "the log stream of %s stopped (%s); reopening in %.2f s", self._call.path, reason, delay
        )
        return delay


class LogStream(Iterator[LogEntry]):
    """What ``Client.logs(..., follow=True)`` returns: an iterator over the
    task's log entries as they arrive, ending when the task ends (then
    :attr:`status` is its terminal status). Close it (or use it in a
    ``with`` block) to stop early."""

    def __init__(self, entries: Iterator[LogEntry], follow: LogFollow) -> None:
        self._entries = entries
        self._follow = follow

    @property
    def status(self) -> Optional[StatusField]:
        """The task's terminal status, once the stream ended."""
        return self._follow.status

    def __iter__(self) -> LogStream:
        return self

    def __next__(self) -> LogEntry:
        return next(self._entries)

    def close(self) -> None:
        """Stops following and closes the connection."""
        close = getattr(self._entries, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> LogStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncLogStream(AsyncIterator[LogEntry]):
    """What ``AsyncClient.logs(..., follow=True)`` returns: the async
    counterpart of :class:`LogStream` (``async for``, ``async with``,
    ``await stream.aclose()``)."""

    def __init__(self, entries: AsyncIterator[LogEntry], follow: LogFollow) -> None:
        self._entries = entries
        self._follow = follow

    @property
    def status(self) -> Optional[StatusField]:
        """The task's terminal status, once the stream ended."""
        return self._follow.status

    def __aiter__(self) -> AsyncLogStream:
        return self

    async def __anext__(self) -> LogEntry:
        return await self._entries.__anext__()

    async def aclose(self) -> None:
        """Stops following and closes the connection."""
        aclose = getattr(self._entries, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> AsyncLogStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
