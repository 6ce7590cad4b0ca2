"""A throwaway PostgreSQL cluster for the test session (unix socket only, no fsync).

initdb and the server refuse to run as root, so as root they run as the ``postgres`` user via ``runuser``;
root still connects over the socket (trust authentication inside a private directory).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

DEFAULT_BINDIR = Path(os.environ.get("GOVSVC_PG_BINDIR", "/usr/lib/postgresql/15/bin"))


def binaries_available(bindir: Path = DEFAULT_BINDIR) -> bool:
    return all((bindir / name).exists() for name in ("initdb", "pg_ctl", "postgres"))


class PostgresCluster:
    """Start with :meth:`start`, stop with :meth:`stop`; :meth:`url` names a database in it."""

    def __init__(self, bindir: Path = DEFAULT_BINDIR) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="govsvc-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root
        self.log_file = self.root / "server.log"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as_postgres, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stdout}\n{result.stderr}\n{log}")

    def start(self) -> PostgresCluster:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server on the existing data directory (after :meth:`pause`)."""
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.log_file),
            "-w",
            "start",
        )

    def pause(self) -> None:
        """Stop the server (every connection is cut, as in an outage), keeping its data."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        if self.data_dir.exists():
            subprocess.run(
                [*self._as_postgres, str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop"],
                capture_output=True,
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def admin_execute(self, statement: str) -> None:
        """Run a statement outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(host=str(self.socket_dir), user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(statement)
