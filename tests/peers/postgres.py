"""A real PostgreSQL server (Debian's package) on loopback for tests.

``deploy/peers/ensure.sh postgres`` installs the package; this module only runs a private
cluster (initdb into a temp dir, pg_ctl start; no system service)::

    pg = PostgresServer().start()
    engine = sqlalchemy.create_engine(pg.url)       # postgresql+psycopg://...
    other_url = pg.create_database("isolated")
    pg.stop()
"""

from __future__ import annotations

import atexit
import logging
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from ._util import ENSURE_SH, PeerProcess, PeerUnavailable, free_port, tail

logger = logging.getLogger(__name__)

_USER = "tickrun"
_DATABASE = "tickrun"
# The cluster is throwaway: durability settings only make every commit wait for the disk.
_SERVER_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def postgres_bindir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin (or $TICKRUN_PG_BINDIR)."""
    override = os.environ.get("TICKRUN_PG_BINDIR")
    if override:
        return Path(override)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise PeerUnavailable(f"PostgreSQL is not installed. Run `{ENSURE_SH} postgres` first.")
    return found[-1].parent


class PostgresServer(PeerProcess):
    """One PostgreSQL cluster on a free 127.0.0.1 port, its data and unix socket in a temp dir,
    a superuser with a random password (scram-sha-256 over TCP) and a database ``tickrun``.

    The constructor does no I/O. PostgreSQL refuses to run as root, so as root every command
    runs as the ``postgres`` user the package creates (``runuser``).
    """

    peer_name = "postgres"

    def __init__(self, *, bindir: Path | None = None, startup_timeout: float = 60.0) -> None:
        self.bindir = bindir
        self.startup_timeout = startup_timeout
        self.password = secrets.token_urlsafe(24)
        self.port: int | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None
        self._data: Path | None = None
        self._started = False

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``tickrun`` database (psycopg 3 driver)."""
        return self.url_for(_DATABASE)

    def url_for(self, database: str) -> str:
        if self.port is None or not self._started:
            raise RuntimeError("PostgresServer is not started")
        return f"postgresql+psycopg://{_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL (tests that need isolation)."""
        import psycopg
        from psycopg import sql

        dsn = self.url_for(_DATABASE).replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, autocommit=True) as conn:
            # CREATE DATABASE takes no bind parameters: quote the name as an identifier.
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self._started and self._data is not None:
            self._started = False
            # fast: roll back open sessions instead of waiting for a pool to disconnect
            for mode in ("fast", "immediate"):
                if self._pg_ctl("stop", "-m", mode, "-t", "20").returncode == 0:
                    break
        super().stop()

    def _describe(self) -> str:
        return f"postgres up at 127.0.0.1:{self.port} (log: {self.log_path})"

    # -- internals ---------------------------------------------------------------------------

    def _check_installation(self) -> Path:
        bindir = self.bindir or postgres_bindir()
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not os.access(bindir / tool, os.X_OK):
                raise PeerUnavailable(f"no {tool} in {bindir}. Run `{ENSURE_SH} postgres` first.")
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PeerUnavailable(
                    f"running as root but there is no postgres user. Run `{ENSURE_SH} postgres`."
                ) from exc
        return bindir

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _run(self, argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self._as_owner(argv), capture_output=True, text=True, timeout=self.startup_timeout
        )
        logger.debug("%s: rc=%d", what, done.returncode)
        return done

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.bindir is not None and self._data is not None
        return self._run([str(self.bindir / "pg_ctl"), "-D", str(self._data), *args], "pg_ctl")

    def _start_once(self, bindir: Path) -> None:
        self.bindir = bindir
        self.workdir = w = Path(tempfile.mkdtemp(prefix="tickrun-postgres-"))
        self._data = w / "data"
        self.log_path = w / "postgres.log"
        pwfile = w / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if os.geteuid() == 0:
            shutil.chown(w, "postgres")
            shutil.chown(pwfile, "postgres")
        initdb = self._run(
            [str(bindir / "initdb"), "-D", str(self._data), "-U", _USER, f"--pwfile={pwfile}",
             "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            "initdb",
        )  # fmt: skip
        pwfile.unlink()
        if initdb.returncode != 0:
            raise PeerUnavailable(f"initdb failed: {initdb.stderr.strip()[-2000:]}")
        self.port = free_port()
        options = (
            f"{_SERVER_OPTIONS} -c listen_addresses=127.0.0.1 -c port={self.port}"
            f" -c unix_socket_directories={w}"
        )
        atexit.register(self.stop)
        self._started = True
        started = self._pg_ctl(
            "start", "-w", "-t", str(int(self.startup_timeout)), "-l", str(self.log_path),
            "-o", options,
        )  # fmt: skip
        if started.returncode != 0:
            # "could not bind ... Address already in use" lets PeerProcess retry on new ports
            raise PeerUnavailable(
                f"postgres did not start: {started.stderr.strip()}; "
                f"log tail ({self.log_path}):\n{tail(self.log_path)}"
            )
        created = self._run(
            [str(bindir / "psql"), "-h", str(w), "-p", str(self.port), "-U", _USER,
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {_DATABASE}"],
            "createdb",
        )  # fmt: skip
        if created.returncode != 0:
            raise PeerUnavailable(f"could not create database {_DATABASE}: {created.stderr}")
