"""A throw-away PostgreSQL instance that a test may stop, restart or kill at will.

The shared server on 127.0.0.1:5432 must never be stopped (other tests use it),
so outage tests run their own: `initdb` into a temporary directory, started on a
free loopback port with its unix socket in the same directory, trust auth, and
removed at the end. initdb and postgres refuse to run as root: as root they run
as the `postgres` OS user (`runuser`), the directory chown'ed to it.

Only fsync is off: a killed server's WAL is still in the OS page cache, so a
crash of the server (what the outage tests do) loses no committed transaction;
only an OS crash would. `synchronous_commit` must stay on: with it off, a
commit is acknowledged before its WAL leaves PostgreSQL's shared memory, and a
SIGKILL of the server loses it (a lost row that is the test's fault, not the
crawler's).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path

import psutil
import psycopg

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_bin() -> Path | None:
    """The newest installed server's bin directory (with initdb and pg_ctl), if any."""
    for path in PG_BIN_DIRS:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def unavailable() -> str | None:
    """Why a private instance cannot be run here, or None."""
    if pg_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root needs a `postgres` OS user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root needs `runuser` (util-linux)"
    return None


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One private PostgreSQL instance: `start`, `stop`, `restart`, `kill`, `url`."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.log = base / "server.log"
        self.bin = pg_bin()
        self.port = 0
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server binaries")

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.base)
        if result.returncode:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")
        return result

    def init(self) -> None:
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--locale=C", "--no-sync"])

    def start(self, timeout: float = 60) -> None:
        """Start on the port of the previous start (a crawl's URL names it), or on a free one."""
        first = not self.port
        for attempt in range(3 if first else 1):
            if first:
                self.port = free_port()  # another process may take it before postgres binds: retry
            options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c max_connections=50")
            try:
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                           "-w", "-t", str(int(timeout)), "start"], timeout=timeout + 10)
                return
            except RuntimeError:
                if attempt == 2 or not first:
                    raise

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def restart(self) -> None:
        """Stop (fast: connections are terminated, open transactions rolled back) and start again."""
        self.stop("fast")
        self.start()

    def postmaster(self) -> psutil.Process | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            return psutil.Process(pid)
        except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: a crash; the next start replays the WAL."""
        main = self.postmaster()
        if main is None:
            return
        processes = [main, *main.children(recursive=True)]
        for proc in processes:
            with suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(processes, timeout=30)

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname} connect_timeout=3"

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.conninfo()):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def destroy(self) -> None:
        if self.postmaster() is not None:
            try:
                self.stop("immediate")
            except RuntimeError:
                self.kill()
        shutil.rmtree(self.base, ignore_errors=True)


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A started private instance in a fresh temporary directory; destroyed on exit."""
    base = Path(tempfile.mkdtemp(prefix="newsingest-pg-"))
    base.chmod(0o700)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(base, entry.pw_uid, entry.pw_gid)
    cluster = PgCluster(base)
    try:
        cluster.init()
        cluster.start()
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.destroy()
