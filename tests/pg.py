"""A real, throw-away PostgreSQL server for tests and benchmarks (Debian ``postgresql`` package).

``PostgresServer.start()`` runs ``initdb`` into a temporary directory and ``pg_ctl start`` on
127.0.0.1 and a free port; ``stop()`` shuts it down immediately and deletes the directory. PostgreSQL
refuses to run as root, so when we are root the server programs run as the ``postgres`` OS user.
Authentication is ``trust`` on loopback only: the server lives as long as the test session.

If ``CALLCENTRE_TEST_POSTGRES_URL`` is set (a server someone else runs, e.g. a CI service), no server
is started and databases are created on that one instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

ENV_URL = "CALLCENTRE_TEST_POSTGRES_URL"


def find_pg_bin(program: str = "initdb") -> str | None:
    """The newest Debian PostgreSQL program (``/usr/lib/postgresql/<ver>/bin/<program>``), or PATH's."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{program}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return found[-1] if found else shutil.which(program)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PostgresError(RuntimeError):
    pass


class PostgresServer:
    """One temporary cluster. ``admin_url`` connects as the superuser to the ``postgres`` database."""

    def __init__(self, *, durable: bool = False, host: str = "127.0.0.1") -> None:
        self.durable = durable
        """False turns fsync off: fine for tests (the data dies with the test run), not for benchmarks."""
        self.host = host
        self.port = 0
        self.directory: Path | None = None
        self._bin = Path(find_pg_bin("initdb") or "initdb").parent
        self._run_as: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/postgres"

    def _run(self, args: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._run_as:
            kwargs["user"] = self._run_as
            kwargs["group"] = pwd.getpwnam(self._run_as).pw_gid
            kwargs["extra_groups"] = []
        result = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.directory,
            **kwargs,  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            raise PostgresError(f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result

    def start(self) -> PostgresServer:
        self.directory = Path(tempfile.mkdtemp(prefix="callcentre-pg-"))
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        data = self.directory / "data"
        self._run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]
        )
        options = [f"-c listen_addresses={self.host}", f"-k {self.directory}", "-c max_connections=200"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        last_error: Exception | None = None
        for _attempt in range(5):  # the free port may be taken between probing and binding
            self.port = free_port(self.host)
            try:
                self._run(
                    [
                        str(self._bin / "pg_ctl"),
                        "-D",
                        str(data),
                        "-l",
                        str(self.directory / "log"),
                        "-w",
                        "-t",
                        "60",
                        "-o",
                        " ".join([f"-p {self.port}", *options]),
                        "start",
                    ],
                    timeout=90,
                )
                return self
            except PostgresError as exc:
                last_error = exc
                time.sleep(0.2)
        self.stop()
        raise PostgresError(f"could not start PostgreSQL: {last_error}")

    def stop(self) -> None:
        if self.directory is None:
            return
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
                self._run([str(self._bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def create_database(admin_url: str, prefix: str = "cc_test") -> str:
    """A new empty database on the server of ``admin_url``; returns its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = parsed.set(database="postgres")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    finally:
        engine.dispose()
