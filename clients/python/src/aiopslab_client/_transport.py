"""What both clients share around a request, without doing I/O themselves:
settings (base URL, token, timeouts), the bearer auth, the retry policy and
its backoff, and turning an answer into a value or an :class:`ApiError`.

The sync and async clients each run the same small loop around it: send,
ask :class:`Attempts` whether to retry and how long to wait, sleep, resend.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Generator, Mapping, Optional, Tuple, TypeVar, Union

import httpx

from ._requests import Call
from ._version import __version__
from .errors import ApiError, DecodeError, TransportError, api_error_class

T = TypeVar("T")

logger = logging.getLogger("aiopslab_client")

DEFAULT_URL = "http://localhost:8000"
URL_ENV = "AIOPSLAB_URL"
TOKEN_ENV = "AIOPSLAB_CLIENT_TOKEN"
#: The server sends a keep-alive comment every 15 s on an event stream; a
#: stream silent for longer than this is taken as dead and reopened.
STREAM_READ_TIMEOUT = 45.0

# Errors after which the request may not have reached the server, or its
# answer was lost: retried when the request is safe to send twice.
_RETRYABLE_ERRORS: Tuple[type, ...] = (
    httpx.NetworkError,
    httpx.TimeoutException,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How failed requests are retried.

    A request is retried only when it is safe to send twice: GET and DELETE,
    and POSTs that carry an ``Idempotency-Key``. It is retried after a
    connection error (refused, reset, timed out) and after an answer whose
    status is in ``statuses`` (503 from the server when its store does not
    answer; 502 and 504 from a load balancer in front of it), at most
    ``retries`` times, waiting an exponential backoff with jitter between
    attempts: about ``backoff * 2**n`` seconds (between half of it and all of
    it), capped at ``max_backoff``. A ``Retry-After`` header is honoured (up
    to ``max_retry_after`` seconds) in place of the backoff.
    """

    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    statuses: FrozenSet[int] = field(default_factory=lambda: frozenset({502, 503, 504}))

    def delay(self, retry: int, retry_after: Optional[float] = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_backoff, self.backoff * (2 ** (retry - 1)))
        return random.uniform(ceiling / 2, ceiling)


def retry_after_seconds(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """A ``Retry-After`` header value (seconds or an HTTP date) in seconds
    from now, or ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


class Attempts:
    """The retry bookkeeping of one call: after each try, says how long to
    wait before the next, or raises / gives up. Shared by both clients."""

    def __init__(self, policy: RetryPolicy, call: Call[Any], url: str) -> None:
        self.policy = policy
        self.call = call
        self.url = url
        self.count = 0

    def started(self) -> None:
        """Counts one attempt."""
        self.count += 1

    def _may_retry(self) -> bool:
        return self.call.retry_safe and self.count <= self.policy.retries

    def after_error(self, error: Exception) -> float:
        """The wait before retrying after a connection ``error``; raises
        :class:`TransportError` when the call may not be retried."""
        kind = type(error).__name__
        if not isinstance(error, _RETRYABLE_ERRORS) or not self._may_retry():
            raise TransportError(
                f"{self.call.method} {self.url} failed after {self.count} attempt(s): {kind}: {error}",
                method=self.call.method,
                url=self.url,
                attempts=self.count,
            ) from error
        delay = self.policy.delay(self.count)
        logger.warning(
            "%s %s failed (%s); retry %d of %d in %.2f s",
            self.call.method,
            self.url,
            kind,
            self.count,
            self.policy.retries,
            delay,
        )
        return delay

    def after_status(self, status: int, headers: Mapping[str, str]) -> Optional[float]:
        """The wait before retrying after an answer with ``status``, or
        ``None`` when the answer is final."""
        if status not in self.policy.statuses or not self._may_retry():
            return None
        delay = self.policy.delay(self.count, retry_after_seconds(headers.get("retry-after")))
        logger.warning(
            "%s %s answered %d; retry %d of %d in %.2f s",
            self.call.method,
            self.url,
            status,
            self.count,
            self.policy.retries,
            delay,
        )
        return delay


class BearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer <token>`` to every request. Its repr
    never shows the token."""

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sets the header (httpx's auth hook)."""
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(<token hidden>)"


@dataclass(frozen=True)
class Settings:
    """A client's resolved settings: the arguments given, else the
    environment (``AIOPSLAB_URL``, ``AIOPSLAB_CLIENT_TOKEN``), else the
    defaults. ``token`` is left out of the repr."""

    base_url: str
    token: Optional[str] = field(repr=False)
    timeout: httpx.Timeout
    retry: RetryPolicy

    @classmethod
    def resolve(
        cls,
        base_url: Optional[str],
        token: Optional[str],
        timeout: Union[float, httpx.Timeout, None],
        retries: Union[int, RetryPolicy, None],
    ) -> Settings:
        """Applies the environment and the defaults to the constructor's
        arguments."""
        url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
        if timeout is None:
            timeout = 30.0
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout)
        if retries is None:
            retries = RetryPolicy()
        elif isinstance(retries, int):
            retries = RetryPolicy(retries=retries)
        return cls(base_url=url, token=token, timeout=timeout, retry=retries)

    def client_options(self) -> Dict[str, Any]:
        """Keyword arguments for ``httpx.Client`` / ``httpx.AsyncClient``."""
        return {
            "base_url": self.base_url,
            "timeout": self.timeout,
            "auth": BearerAuth(self.token) if self.token else None,
            "headers": {"User-Agent": f"aiopslab-client/{__version__}", "Accept": "application/json"},
            "follow_redirects": False,
        }

    def stream_timeout(self) -> httpx.Timeout:
        """The timeout of an event stream: the usual one, with a read timeout
        long enough for the server's keep-alives."""
        return httpx.Timeout(
            connect=self.timeout.connect,
            read=max(self.timeout.read or 0.0, STREAM_READ_TIMEOUT),
            write=self.timeout.write,
            pool=self.timeout.pool,
        )

    def describe(self, cls_name: str) -> str:
        """The repr of a client: its URL, and whether a token is set."""
        token = "<hidden>" if self.token else None
        return f"{cls_name}(base_url={self.base_url!r}, token={token})"


class ClientBase:
    """What both clients share: their settings and the httpx client they send
    with (``_http_class``: ``httpx.Client`` or ``httpx.AsyncClient``)."""

    _http_class: Any = None

    def __init__(
        self,
        base_url: Optional[str] = None,
        *,
        token: Optional[str] = None,
        timeout: Union[float, httpx.Timeout, None] = 30.0,
        retries: Union[int, RetryPolicy, None] = 3,
    ) -> None:
        self._settings = Settings.resolve(base_url, token, timeout, retries)
        self._http = self._http_class(**self._settings.client_options())

    @property
    def base_url(self) -> str:
        """The server this client talks to."""
        return self._settings.base_url

    def __repr__(self) -> str:
        return self._settings.describe(type(self).__name__)


def build_request(
    http: Union[httpx.Client, httpx.AsyncClient], settings: Settings, call: Call[Any]
) -> httpx.Request:
    """The httpx request of ``call``."""
    return http.build_request(
        call.method,
        call.path,
        params=call.query or None,
        content=call.body,
        headers=dict(call.headers),
        timeout=settings.stream_timeout() if call.stream else settings.timeout,
    )


def error_from(response: httpx.Response, call: Call[Any], attempts: int) -> ApiError:
    """The :class:`ApiError` of an error answer (its body already read)."""
    status = response.status_code
    code, message, details = f"http_{status}", response.reason_phrase or "error", {}
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
        text = response.text.strip()
        if text:
            message = text[:500]
    if isinstance(body, dict):
        code = str(body.get("code") or code)
        message = str(body.get("error") or message)
        if isinstance(body.get("details"), dict):
            details = body["details"]
    return api_error_class(status)(
        status, code, message, details, method=call.method, path=call.path, attempts=attempts
    )


def parse_answer(response: httpx.Response, call: Call[T], attempts: int) -> T:
    """The value of a (read) answer: ``call.parse`` of its JSON, or the
    :class:`ApiError` it stands for."""
    if response.is_error:
        raise error_from(response, call, attempts)
    try:
        value = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DecodeError(f"{call.method} {call.path}: the answer is not JSON: {error}") from error
    try:
        return call.parse(value)
    except ValueError as error:  # pydantic.ValidationError is a ValueError
        raise DecodeError(f"{call.method} {call.path}: unexpected answer: {error}") from error
