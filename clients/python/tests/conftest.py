"""Fixtures: real servers (embedded store and PostgreSQL) and clients of them.

Every test that takes ``server`` (or ``client``) runs once per store: the
``server`` fixture is parametrized over ``memory`` and ``postgres`` and
started once per session for each. Its in-process workers run simulated
episodes of 4 steps of 250 ms, and hand new tasks out at once (the
quickstart's test has servers of its own with the usual dispatch delay).
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest
from servers import ScratchDatabase, ServerProcess

from aiopslab_client import Client, RetryPolicy

PROBLEM = "misconfig_app_hotel_res-detection-1"
#: A backend type no in-process worker serves: a task of it stays pending.
NOBODY = "no-such-backend"
#: Retries of the test clients: few and quick.
QUICK_RETRIES = RetryPolicy(retries=2, backoff=0.05, max_backoff=0.2)


@pytest.fixture(autouse=True)
def _no_client_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's AIOPSLAB_URL / AIOPSLAB_CLIENT_TOKEN never leak into a test."""
    monkeypatch.delenv("AIOPSLAB_URL", raising=False)
    monkeypatch.delenv("AIOPSLAB_CLIENT_TOKEN", raising=False)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory):
    """Where the servers write their logs."""
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def scratch_database() -> Iterator[Callable[..., ScratchDatabase]]:
    """Makes fresh PostgreSQL databases; drops them all at the end."""
    made: List[ScratchDatabase] = []

    def make(own_role: bool = False) -> ScratchDatabase:
        made.append(ScratchDatabase(own_role=own_role))
        return made[-1]

    yield make
    for database in made:
        database.drop()


@contextmanager
def serve_store(
    store: str, log_dir: Path, scratch_database: Callable[..., ScratchDatabase], **options: Any
) -> Iterator[ServerProcess]:
    """A server of ``store`` (``memory``, or ``postgres`` on a fresh
    database) with ``options`` (see :class:`ServerProcess`), stopped at the end."""
    database_url = scratch_database().url if store == "postgres" else None
    with ServerProcess(log_dir, database_url=database_url, **options) as process:
        yield process


@pytest.fixture(scope="session", params=["memory", "postgres"])
def server(request: pytest.FixtureRequest, log_dir, scratch_database) -> Iterator[ServerProcess]:
    """The shared server of one store (the test runs once per store)."""
    with serve_store(
        request.param,
        log_dir,
        scratch_database,
        workers=4,
        sim_steps=4,
        sim_step_delay_ms=250,
        dispatch_delay_ms=0,
    ) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    """A sync client of ``server``."""
    with Client(server.url, retries=QUICK_RETRIES) as client:
        yield client


@pytest.fixture
def tag() -> str:
    """A value unique to the test, to find its own tasks on a shared server
    (as a model name or a metadata value)."""
    return f"test-{uuid.uuid4().hex[:12]}"
