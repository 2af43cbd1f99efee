"""Retries (connection errors, a real 503 with Retry-After), which requests
are retried, and the client token, against real servers."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from conftest import PROBLEM
from servers import ServerProcess, free_port

from aiopslab_client import (
    AuthenticationError,
    Client,
    RetryPolicy,
    TransportError,
    UnavailableError,
)

FAST = RetryPolicy(retries=2, backoff=0.01, max_backoff=0.02)


def _retry_messages(caplog: pytest.LogCaptureFixture) -> list:
    return [
        r.getMessage() for r in caplog.records if r.name == "aiopslab_client" and "retry" in r.getMessage()
    ]


def test_a_request_is_retried_until_the_server_is_up(log_dir, caplog: pytest.LogCaptureFixture) -> None:
    server = ServerProcess(log_dir, workers=0, name="late")
    starter = threading.Timer(0.5, server.start, kwargs={"wait": False})
    patient = RetryPolicy(retries=30, backoff=0.1, max_backoff=0.25)
    started = time.monotonic()
    starter.start()
    try:
        with Client(server.url, retries=patient) as client:
            assert client.health().status == "ok"
            assert client.create(PROBLEM, idempotency_key="late-1").status == "pending"
    finally:
        starter.join()
        server.stop()
    assert time.monotonic() - started >= 0.5
    retries = _retry_messages(caplog)
    assert retries and "GET" in retries[0] and "ConnectError" in retries[0]


def test_retries_stop_after_the_policy_and_say_how_many(caplog: pytest.LogCaptureFixture) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with Client(closed, retries=FAST) as client:
        with pytest.raises(TransportError) as caught:
            client.get("00000000-0000-4000-8000-000000000000")
        assert caught.value.attempts == 3 and caught.value.method == "GET"
        assert "failed after 3 attempt(s)" in str(caught.value) and closed in str(caught.value)
        assert len(_retry_messages(caplog)) == 2

        with pytest.raises(TransportError) as caught:
            client.cancel("00000000-0000-4000-8000-000000000000")
        assert caught.value.attempts == 3  # DELETE is retried

        with pytest.raises(TransportError) as caught:
            client.create(PROBLEM)
        assert caught.value.attempts == 1  # a POST without an idempotency key is never sent twice

        with pytest.raises(TransportError) as caught:
            client.create(PROBLEM, idempotency_key="k-1")
        assert caught.value.attempts == 3
        with pytest.raises(TransportError) as caught:
            client.create_batch(PROBLEM, count=2, idempotency_key="k-2")
        assert caught.value.attempts == 3
        with pytest.raises(TransportError) as caught:
            list(client.export())
        assert caught.value.attempts == 3
    with Client(closed, retries=0) as client, pytest.raises(TransportError) as caught:
        client.stats()
    assert caught.value.attempts == 1


def test_a_503_is_retried_after_its_retry_after(log_dir, scratch_database, caplog) -> None:
    """The database stops taking the server's connections (CONNECTION LIMIT 0
    on its role, connections closed): the real server answers 503 with
    Retry-After: 1; the client waits that second (not its 10 ms backoff) and
    succeeds once the database takes connections again."""
    database = scratch_database(own_role=True)
    refuse = f"ALTER DATABASE {database.name} CONNECTION LIMIT 0"
    accept = f"ALTER DATABASE {database.name} CONNECTION LIMIT -1"
    with ServerProcess(log_dir, workers=0, database_url=database.url, name="unavailable") as server:
        database.sql(refuse)
        database.sql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database.name}'"
        )
        back = threading.Timer(1.5, database.sql, args=(accept,))
        try:
            with Client(server.url, retries=0) as client, pytest.raises(UnavailableError) as caught:
                client.stats()
            error = caught.value
            assert (error.status, error.code, error.attempts) == (503, "unavailable", 1)

            started = time.monotonic()
            back.start()
            with Client(server.url, retries=RetryPolicy(retries=5, backoff=0.01, max_backoff=0.01)) as client:
                stats = client.stats()
            elapsed = time.monotonic() - started
        finally:
            back.cancel()
            back.join()
            database.sql(accept)
    assert stats.tasks_by_status["pending"] == 0
    retries = _retry_messages(caplog)
    assert retries and all("answered 503" in m and "in 1.00 s" in m for m in retries)
    assert 2 <= len(retries) <= 3  # one second apart while the database was away
    assert 1.5 <= elapsed < len(retries) + 1


def test_the_token_is_sent_and_never_shown(log_dir, monkeypatch, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cret-token-value"
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG
    with ServerProcess(log_dir, workers=0, name="token", extra_args=["--client-token", secret]) as server:
        with Client(server.url, retries=FAST) as anonymous:
            with pytest.raises(AuthenticationError) as caught:
                anonymous.stats()
            assert (caught.value.status, caught.value.code) == (401, "unauthorized")
            assert anonymous.health().status == "ok"  # /health is never guarded

        with Client(server.url, token="wrong", retries=FAST) as wrong, pytest.raises(AuthenticationError):
            wrong.stats()

        with Client(server.url, token=secret, retries=FAST) as client:
            assert client.stats().tasks_by_status["pending"] == 0
            shown = [repr(client), str(client), repr(client._settings), repr(client._http.auth)]
            with pytest.raises(Exception) as missing:
                client.get("00000000-0000-4000-8000-000000000000")
            shown += [str(missing.value), repr(missing.value)]

        monkeypatch.setenv("AIOPSLAB_URL", server.url)
        monkeypatch.setenv("AIOPSLAB_CLIENT_TOKEN", secret)
        with Client(retries=FAST) as from_environment:
            assert from_environment.base_url == server.url
            assert from_environment.stats().workers_by_status["idle"] == 0
            shown.append(repr(from_environment))

    closed = f"http://127.0.0.1:{free_port()}"
    with Client(closed, token=secret, retries=FAST) as client, pytest.raises(TransportError) as caught:
        client.stats()
    shown += [str(caught.value), repr(caught.value), repr(caught.value.__cause__)]
    logged = [record.getMessage() for record in caplog.records] + [caplog.text]
    assert any("HTTP Request" in line for line in logged)  # httpx's DEBUG lines were captured
    assert "token=<hidden>" in shown[0]
    for text in shown + logged:
        assert secret not in text
