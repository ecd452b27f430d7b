"""A throwaway PostgreSQL server for the test session, so storage tests run against the real thing.

:func:`cluster` runs ``initdb`` into a fresh temp dir and starts the server with
``pg_ctl``, listening on 127.0.0.1 only, on a free port, with trust
authentication and no Unix socket; it is started once per pytest session and
stopped when the session ends.  As root (CI, the dev container) PostgreSQL
refuses to run, so ``initdb`` and ``pg_ctl`` run as the ``postgres`` system user
and the data dir belongs to it.  Each test takes a database or schema of its own
from :meth:`PgCluster.new_database` / :meth:`PgCluster.new_schema`.

The server binaries come from Debian (``scripts/test`` installs ``postgresql``).
When they are missing, or the server does not start, the test is skipped with the
reason, except under CI (``CI=true``), where it fails: CI must run these.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

import pytest

SUPERUSER = "postgres"
START_TIMEOUT_SECONDS = 60


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (under CI the PostgreSQL tests must run: scripts/test installs PostgreSQL)")
    pytest.skip(reason)


def require_psycopg() -> None:
    """At a test module's top: skip the module without psycopg (fail under CI)."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        reason = "psycopg is not installed: pip install -e '.[test]'"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} (under CI the PostgreSQL tests must run)", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` holding initdb and pg_ctl (Debian's layout)."""
    candidates = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    candidates = [d for d in candidates if (d / "pg_ctl").exists()]
    if not candidates:
        return None
    return max(candidates, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    bindir: Path
    root: Path  # a temp dir holding data/ and the server log
    port: int
    run_as: str | None  # the system user running the server (``postgres`` when we are root)
    _names: itertools.count = field(default_factory=lambda: itertools.count(1))  # type: ignore[type-arg]

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres", schema: str | None = None) -> str:
        url = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"
        if schema is not None:
            url += "?options=" + quote(f"-c search_path={schema}", safe="")
        return url

    def admin(self, sql: str, database: str = "postgres") -> list[tuple[object, ...]]:
        """Run one statement as the superuser (autocommit) and return its rows."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(sql)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"keyhive_test_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def new_schema(self, database: str = "postgres") -> str:
        """A fresh, empty schema (cheaper than a database), made the only one on the URL's search_path."""
        name = f"keyhive_test_{next(self._names)}"
        self.admin(f"CREATE SCHEMA {name}", database)
        return self.url(database, schema=name)

    def _run(self, argv: Sequence[str], timeout: float = START_TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
                              timeout=timeout, cwd=self.root)

    def start(self) -> str:
        """initdb and start; what went wrong, if anything."""
        base = [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-sync"]
        # A linguistic default collation ('B' sorts after 'a'), so that the tests show that
        # Keyhive's code point order comes from its own COLLATE "C", not from the server's default.
        initdb = self._run([*base, "--locale-provider=icu", "--icu-locale=en-US"])
        if initdb.returncode != 0:  # a PostgreSQL built without ICU
            self._run(["rm", "-rf", str(self.data_dir)])
            initdb = self._run(base)
        if initdb.returncode != 0:
            return f"initdb failed: {initdb.stderr.strip()[-500:]}"
        return self._pg_ctl_start()

    def _pg_ctl_start(self) -> str:
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
                   "-c max_connections=200 -c shared_buffers=32MB")
        started = self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
                             "-o", options, "-w", "-t", str(START_TIMEOUT_SECONDS), "start"])
        if started.returncode != 0:
            log = self.log_path.read_text(errors="replace")[-1000:] if self.log_path.exists() else ""
            return f"pg_ctl start failed: {started.stderr.strip()[-500:]} {log}"
        return ""

    def pause(self) -> None:
        """Shut the server down (``pg_ctl stop -m fast``: every session is cut), keeping its data."""
        stopped = self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])
        assert stopped.returncode == 0, stopped.stderr

    def resume(self) -> None:
        """Start the server again after :meth:`pause`, on the same port, with the same data."""
        problem = self._pg_ctl_start()
        assert not problem, problem

    def stop(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)


_cluster: PgCluster | None = None


def cluster(config: pytest.Config) -> PgCluster:
    """The session's PostgreSQL server, started on first use; skips (fails under CI) if it cannot be."""
    global _cluster
    if _cluster is not None:
        return _cluster
    require_psycopg()
    bindir = find_bindir()
    if bindir is None:
        _unavailable("PostgreSQL's server (initdb, pg_ctl) is not installed: apt-get install postgresql")
    assert bindir is not None
    run_as = None
    root = Path(tempfile.mkdtemp(prefix="keyhive-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            _unavailable("running as root, and there is no 'postgres' system user to run PostgreSQL as")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = "postgres"
    candidate = PgCluster(bindir, root, _free_port(), run_as)
    problem = candidate.start()
    if problem:
        candidate.stop()
        _unavailable(f"could not start a PostgreSQL server: {problem}")
    _cluster = candidate
    config.add_cleanup(_stop)
    return candidate


def _stop() -> None:
    global _cluster
    if _cluster is not None:
        _cluster.stop()
        _cluster = None
