"""Real aiopslab servers for the tests: the ``aiopslab`` program
(``$AIOPSLAB_BIN``) started on a free port, on the embedded store or on a
scratch PostgreSQL database made with ``createdb`` and dropped with
``dropdb``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import List, Optional
from urllib.parse import urlsplit, urlunsplit

import httpx

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"
# Variables the server reads that must come from the test, not the caller's shell.
_SERVER_ENV_OVERRIDES = ("DATABASE_URL", "AIOPSLAB_CLIENT_TOKEN", "AIOPSLAB_WORKER_TOKEN", "AIOPSLAB_URL")


def server_binary() -> str:
    """The ``aiopslab`` program, from ``AIOPSLAB_BIN``; fails with how to get it."""
    path = os.environ.get("AIOPSLAB_BIN", "")
    if not path:
        raise RuntimeError(
            "AIOPSLAB_BIN is not set: point it at the aiopslab program "
            "(cargo build --release -p aiopslab-cli, then AIOPSLAB_BIN=target/release/aiopslab)"
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(
            f"AIOPSLAB_BIN={path} is not an executable file "
            "(cargo build --release -p aiopslab-cli builds target/release/aiopslab)"
        )
    return path


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ScratchDatabase:
    """A fresh PostgreSQL database on the server of ``DATABASE_URL``, made
    by ``createdb`` and dropped (``--force``) by :meth:`drop`. With
    ``own_role`` it belongs to a new login role of its own (not a superuser,
    so that ``CONNECTION LIMIT`` applies to it), which :attr:`url` names and
    :meth:`drop` drops too."""

    def __init__(self, prefix: str = "aiopslab_pyclient", own_role: bool = False) -> None:
        base = urlsplit(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
        self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.role: Optional[str] = f"{self.name}_owner" if own_role else None
        self._args = [
            "-h",
            base.hostname or "127.0.0.1",
            "-p",
            str(base.port or 5432),
            "-U",
            base.username or "postgres",
        ]
        self._env = dict(os.environ)
        if base.password:
            self._env["PGPASSWORD"] = base.password
        netloc = base.netloc
        if self.role:
            self.sql(f"CREATE ROLE {self.role} LOGIN")
            netloc = f"{self.role}@{base.hostname or '127.0.0.1'}:{base.port or 5432}"
            self._run("createdb", "-O", self.role, self.name)
        else:
            self._run("createdb", self.name)
        self.url = urlunsplit((base.scheme, netloc, "/" + self.name, base.query, ""))

    def _run(self, program: str, *args: str) -> str:
        done = subprocess.run(
            [program, *self._args, *args], env=self._env, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()} "
                "(the tests need a PostgreSQL whose role may create databases: set DATABASE_URL)"
            )
        return done.stdout

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Runs one SQL statement with ``psql`` in ``database``."""
        return self._run(
            "psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", statement
        )

    def drop(self) -> None:
        """Drops the database (closing any connection still open to it) and its role."""
        self._run("dropdb", "--force", "--if-exists", self.name)
        if self.role:
            self.sql(f"DROP ROLE IF EXISTS {self.role}")


class ServerProcess:
    """One running ``aiopslab serve``, its log in ``log_path``."""

    def __init__(
        self,
        log_dir: Path,
        *,
        workers: int = 2,
        sim_steps: int = 3,
        sim_step_delay_ms: int = 100,
        dispatch_delay_ms: int = 0,
        database_url: Optional[str] = None,
        port: Optional[int] = None,
        extra_args: Optional[List[str]] = None,
        name: str = "server",
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = "postgres" if database_url else "memory"
        self.database_url = database_url
        self.log_path = log_dir / f"{name}-{self.store}-{self.port}.log"
        self.args = [
            server_binary(),
            "serve",
            "--port", str(self.port),
            "--workers", str(workers),
            "--sim-steps", str(sim_steps),
            "--sim-step-delay-ms", str(sim_step_delay_ms),
            "--dispatch-delay-ms", str(dispatch_delay_ms),
        ]  # fmt: skip
        if database_url:
            self.args += ["--database-url", database_url]
        self.args += extra_args or []
        self.process: Optional[subprocess.Popen] = None

    def start(self, wait: bool = True) -> ServerProcess:
        """Starts the process and, with ``wait``, waits until ``/health`` answers ok."""
        env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_OVERRIDES}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Waits until ``GET /health`` answers 200; fails with the log's tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the server did not become healthy in {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
