"""A throwaway PostgreSQL server for the tests (Debian's postgresql, no systemd).

The platform tests run against SQLite and against a real PostgreSQL. ``scripts/test.sh`` installs
Debian's ``postgresql`` package; this module starts a private server in a temporary folder on a
free loopback port (``initdb`` + ``pg_ctl``, as the ``postgres`` user when run as root), and can
stop, kill and restart it so that tests can exercise recovery. Usable on its own::

    python tests/pgserver.py start /tmp/pg   # prints DEEPSIFT_TEST_DATABASE_URL=...
    python tests/pgserver.py stop /tmp/pg
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path


def pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<v>/bin`` (or the folder of ``pg_ctl`` on PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in Path(p).parent.name.split(".") if x.isdigit()])
    if found:
        return Path(found[-1])
    ctl = shutil.which("pg_ctl")
    return Path(ctl).parent if ctl else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One private PostgreSQL cluster under ``root`` listening on 127.0.0.1:``port``."""

    def __init__(self, root: str | os.PathLike, port: int | None = None, dbname: str = "deepsift") -> None:
        self.root = Path(root)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = port or free_port()
        self.dbname = dbname
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed: `apt-get install postgresql` (scripts/test.sh does it)")

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3 driver)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def start(self) -> "PgServer":
        """Create the cluster on first use, start it and make sure the database exists."""
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        if not (self.data / "PG_VERSION").is_file():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                  f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                  f"-c max_connections=200", "start")
        exists = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-tAc",
                           f"SELECT 1 FROM pg_database WHERE datname = '{self.dbname}'")
        if exists.stdout.strip() != "1":
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.dbname)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart, fast or immediate, as pg_ctl)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "immediate") -> None:
        """Stop (abruptly by default, as a crash would) and start again on the same port."""
        self.stop(mode)
        self.start()

    def reset_database(self) -> None:
        """Drop and recreate the database (a clean slate between tests)."""
        base = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        self._run("dropdb", *base, "--force", "--if-exists", self.dbname)
        self._run("createdb", *base, self.dbname)

    def destroy(self) -> None:
        """Stop the server and remove its folder."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    action, root = sys.argv[1], sys.argv[2]
    server = PgServer(root, int(sys.argv[3]) if len(sys.argv) > 3 else None)
    if action == "start":
        server.start()
        print(f"DEEPSIFT_TEST_DATABASE_URL={server.url}")
    else:
        server.stop()
