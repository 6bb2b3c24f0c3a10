"""A private, throw-away PostgreSQL server for tests (Debian's `postgresql` package).

`PgServer().start()` runs ``initdb --no-sync -A trust`` in a fresh temporary folder, starts
the server on a free loopback port with its socket in that folder, creates a database and
returns (a failed start stops what it started); `url` is then a SQLAlchemy URL for it; `stop()` shuts it down and removes the folder.
initdb refuses to run as root, so under root every server command runs as the ``postgres``
user (``runuser -u postgres --``) in a folder that user owns.

`find_bin()` returns the folder of the server binaries (initdb, pg_ctl; the database is
created over a psycopg connection), or None: tests skip then, saying
which package provides them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

APT_PACKAGE = "postgresql"


def find_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: Debian's layout (newest version), else PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    for c in reversed(candidates):
        if (Path(c).parent / "pg_ctl").exists():
            return Path(c).parent
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    return None


def missing_reason() -> str | None:
    """Why a server cannot be started here, or None if it can."""
    if find_bin() is None:
        return (f"PostgreSQL server binaries (initdb, pg_ctl) not found: "
                f"`apt-get install -y {APT_PACKAGE}` provides them")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to switch to the 'postgres' user"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, dbname: str = "nas") -> None:
        self.bin = find_bin()
        self.dbname = dbname
        self.port = 0
        self.dir: Path | None = None
        self.user = "postgres"
        self._as_root = os.geteuid() == 0
        if not self._as_root:
            self.user = pwd.getpwuid(os.geteuid()).pw_name

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if res.returncode != 0:
            log = ""
            if self.dir is not None and (self.dir / "server.log").exists():
                log = (self.dir / "server.log").read_text()[-2000:]
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-2000:]}\n{log}")
        return res

    def start(self) -> "PgServer":
        reason = missing_reason()
        if reason:
            raise RuntimeError(reason)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nas-pg-"))
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "--no-sync", "-A", "trust", "-U", self.user, "-E", "UTF8")
        last = None
        for _ in range(5):  # a free port can be taken between choosing it and binding it
            self.port = free_port()
            opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
            try:
                self._run("pg_ctl", "-D", str(data), "-l", str(self.dir / "server.log"), "-w", "-t", "60",
                          "-o", opts, "start", timeout=90)
                break
            except RuntimeError as exc:
                last = exc
        else:
            raise RuntimeError(f"could not start PostgreSQL: {last}")
        self._createdb()

    def _createdb(self) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')

    def stop(self) -> None:
        if self.dir is None:
            return
        try:
            if (self.dir / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "PgServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
