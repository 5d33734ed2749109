"""A throwaway PostgreSQL server for the tests and the benchmarks (anything that needs a real one briefly).

``PgServer.start()`` runs ``initdb`` (trust authentication, superuser ``keyfob``) and ``pg_ctl
start -w`` in a new temporary folder; the server listens on a unix socket in that folder only (no
TCP port, so parallel test workers never collide) and runs without fsync (nothing here has to
survive a crash). ``create_database()`` hands out fresh, empty databases as SQLAlchemy URLs;
``stop()`` stops the server and deletes the folder.

``initdb`` refuses to run as root, so as root the server's programs run as the ``postgres``
system user (Debian's package makes it) through ``runuser``, in a folder that user owns.
No pytest here: it lives in bench/ so that the benchmarks and the tests (which import bench's
harness modules, as they do bench.power_cut) share one copy.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "keyfob"
PORT = 5432  # only names the socket file (.s.PGSQL.5432) in the server's own folder
_DEBIAN_BINS = "/usr/lib/postgresql/*/bin"
_RUN_AS = ("postgres", "nobody")  # as root: the first of these that exists
# Small WAL segments: tests read the log back (PgServer.on_disk).
_INITDB = ("--auth=trust", "--no-sync", "--wal-segsize=1", "-E", "UTF8", "--locale=C")
# A unix socket only, and no durability: nothing here has to survive a crash.
_OPTIONS = (
    "-c listen_addresses=''",
    "-c fsync=off",
    "-c synchronous_commit=off",
    "-c full_page_writes=off",
    "-c max_connections=200",
)
MISSING = "PostgreSQL server binaries (initdb, pg_ctl) not found; `make test` installs Debian's postgresql"


class PgServerError(Exception):
    """The throwaway server could not be made, started or used; the message says which step."""


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: Debian's newest ``/usr/lib/postgresql/N/bin``
    (not on PATH there), else wherever PATH has them. None if there is none."""

    def major(path: str) -> int:
        m = re.search(r"/(\d+)/bin$", path)
        return int(m.group(1)) if m else 0

    for d in sorted(glob.glob(_DEBIAN_BINS), key=major, reverse=True):
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl", path=os.path.dirname(initdb)):
        return Path(initdb).parent
    return None


def _account() -> pwd.struct_passwd | None:
    """Who runs the server's programs: None for ourselves, or (as root) an unprivileged user."""
    if os.geteuid() != 0:
        return None
    for name in _RUN_AS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PgServerError(f"initdb refuses to run as root and there is no {' or '.join(_RUN_AS)} user to run it as")


class PgServer:
    """One running throwaway server. Use :meth:`start`; :meth:`stop` when done."""

    def __init__(self, bindir: Path, folder: Path, account: pwd.struct_passwd | None):
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "server.log"
        self._account = account
        self._names = itertools.count(1)
        self._born: dict[str, float] = {}
        self._admin = None
        self._watcher: subprocess.Popen | None = None

    @classmethod
    def start(cls, bindir: Path | None = None, tag: str = "") -> PgServer:
        """initdb + pg_ctl start in a new folder under the system's temporary folder (``tag``, e.g.
        an xdist worker id, goes into its name). Raises :class:`PgServerError` naming the step."""
        bindir = bindir or find_bindir()
        if bindir is None:
            raise PgServerError(MISSING)
        account = _account()
        # Not under pytest's basetemp: that is private to root, and the server's user must reach it.
        folder = Path(tempfile.mkdtemp(prefix=f"keyfob-pg-{tag}-" if tag else "keyfob-pg-"))
        if account is not None:
            os.chown(folder, account.pw_uid, account.pw_gid)
        server = cls(bindir, folder, account)
        try:
            server._run("initdb", ["-D", str(server.data), "-U", SUPERUSER, *_INITDB])
            options = " ".join([*_OPTIONS, f"-p {PORT}", f"-c unix_socket_directories='{folder}'"])
            server._run("pg_ctl", ["-D", str(server.data), "-l", str(server.log), "-o", options, "-w", "start"])
            server._watch(os.getpid())
        except BaseException:
            server._remove()
            raise
        return server

    def _run(self, program: str, args: list[str]) -> None:
        argv = [str(self.bindir / program), *args]
        if self._account is not None:
            argv = ["runuser", "-u", self._account.pw_name, "--", *argv]
        proc = subprocess.run(argv, cwd=self.folder, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
            if self.log.exists():
                tail += self.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise PgServerError(f"{program} failed (exit {proc.returncode}): " + " | ".join(tail))

    def _watch(self, owner: int) -> None:
        """A watcher that stops the server and deletes its folder if ``owner`` (the test process)
        dies without calling :meth:`stop` (killed by a timeout, say); it ends with the server."""
        pid, pg_ctl = self.data / "postmaster.pid", self.bindir / "pg_ctl"
        script = (
            f"while [ -e /proc/{owner} ] && [ -e '{pid}' ]; do sleep 1; done; "  # /proc: kill -0 fails as another user
            f"[ -e '{pid}' ] && '{pg_ctl}' -D '{self.data}' -m immediate stop >/dev/null 2>&1; rm -rf '{self.folder}'"
        )
        argv = ["sh", "-c", script]
        if self._account is not None:
            argv = ["runuser", "-u", self._account.pw_name, "--", *argv]
        # its own session: a Ctrl-C to the tests does not reach it before it has cleaned up
        self._watcher = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    # -- databases ------------------------------------------------------------------------------------

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server (psycopg 3, over the unix socket)."""
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.folder}&port={PORT}"

    def _admin_conn(self):
        import psycopg

        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(
                host=str(self.folder), port=PORT, user=SUPERUSER, dbname="postgres", autocommit=True
            )
        return self._admin

    def create_database(self) -> str:
        """A new empty database (from ``template0``); returns its URL. FILE_COPY copies the
        template's files instead of writing all of them into the write-ahead log (PostgreSQL 15's
        default), which keeps the log small for :meth:`on_disk`."""
        name = f"kf{next(self._names)}"
        self._admin_conn().execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        self._born[name] = time.time()
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`create_database`, closing any connection left open on it."""
        self._admin_conn().execute(f'DROP DATABASE IF EXISTS "{self._name(url)}" WITH (FORCE)')

    @staticmethod
    def _name(url: str) -> str:
        return url.split("@/", 1)[1].split("?", 1)[0]

    def on_disk(self, url: str) -> bytes:
        """Everything the server has written for ``url``'s database: its data files and the whole
        write-ahead log (after a checkpoint, so no page is only in memory), for tests that look
        for what must never be stored."""
        name = self._name(url)
        conn = self._admin_conn()
        conn.execute("CHECKPOINT")
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()[0]
        # the log segments written to since the database was made (1 s of slack for coarse mtimes)
        since = self._born.get(name, 0.0) - 1.0
        wal = [f for f in sorted((self.data / "pg_wal").glob("0*")) if f.stat().st_mtime >= since]
        files = sorted((self.data / "base" / str(oid)).iterdir()) + wal
        return b"".join(f.read_bytes() for f in files if f.is_file())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_count(self, needle: str) -> int:
        """How many lines of the server's log contain ``needle`` (e.g. "deadlock detected")."""
        with open(self.log, errors="replace") as fh:
            return sum(needle in line for line in fh)

    # -- stopping -------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended) and delete its folder."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._watcher is not None:
            # we clean up ourselves: a watcher left running would see the pid file go at the end of
            # the shutdown and delete the folder while pg_ctl -w still waits on it (pg_ctl: directory
            # does not exist)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._watcher.pid, signal.SIGKILL)
            self._watcher.wait(10)
            self._watcher = None
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", ["-D", str(self.data), "-m", "fast", "-t", "60", "-w", "stop"])
        finally:
            self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
