"""Several govsvc instances over one PostgreSQL on loopback: ``make cluster`` (or ``python -m bench.cluster
--instances 3``) starts a throwaway PostgreSQL 15, runs ``govsvc init`` against it, starts N gunicorn instances on
free loopback ports, prints their URLs and an admin API key, and stops everything on Ctrl-C. The load and soak runs
(``bench/mix.py``, ``bench/soak.py``) use the same :class:`Cluster`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from govsvc.auth.service import create_client
from govsvc.config import PROJECT_ROOT
from govsvc.core.db import Database
from govsvc.policy.service import load_policy_file, roles_of
from tests.support.postgres import PostgresCluster
from tests.support.server import GunicornServer

SECRET = "cluster-secret-key-0123456789abcdef0123456789"  # noqa: S105 - a throwaway local cluster
ROOT_KEYS = "1:" + "Q0xVU1RFUkNMVVNURVJDTFVTVEVSQ0xVU1RFUkNMVVM="  # 32 bytes, throwaway


class Cluster:
    """``with Cluster(instances=2) as cluster: cluster.urls, cluster.key("app")``."""

    def __init__(self, instances: int = 2, *, workers: int = 2, threads: int = 4, log_dir: Path | None = None):
        self.instances, self.workers, self.threads = instances, workers, threads
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="govsvc-cluster-"))
        self.postgres = PostgresCluster()
        self.servers: list[GunicornServer] = []
        self.url = ""

    @property
    def env(self) -> dict[str, str]:
        return {
            "GOVSVC_ENV": "production",
            "GOVSVC_SECRET_KEY": SECRET,
            "GOVSVC_ROOT_KEYS": ROOT_KEYS,
            "GOVSVC_DATABASE_URL": self.url,
            "GOVSVC_INSTANCE_DIR": str(self.log_dir),
            "GOVSVC_LOG_LEVEL": "WARNING",
        }

    def __enter__(self) -> Cluster:
        self.postgres.start()
        self.postgres.admin_execute("CREATE DATABASE govsvc")
        self.url = self.postgres.url("govsvc")
        subprocess.run(
            [str(Path(sys.executable).parent / "govsvc"), "init"],
            cwd=PROJECT_ROOT,
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
        )
        for number in range(self.instances):
            server = GunicornServer(
                self.env, workers=self.workers, threads=self.threads, log_path=self.log_dir / f"instance{number}.log"
            )
            self.servers.append(server.__enter__())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for server in self.servers:
            server.__exit__(exc_type, exc, tb)
        self.postgres.stop()

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    def key(self, role: str, name: str | None = None) -> str:
        """A new API client of this role; its bearer key."""
        database = Database(self.url)
        try:
            with database.transaction() as session:
                roles = frozenset(roles_of(load_policy_file(PROJECT_ROOT / "policies")))
                issued = create_client(session, name=name or f"cluster-{role}", role=role, known_roles=roles)
        finally:
            database.dispose()
        return issued.api_key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="N govsvc instances over one throwaway PostgreSQL, on loopback")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with Cluster(args.instances, workers=args.workers) as cluster:
        print(f"PostgreSQL: {cluster.url}")
        for url in cluster.urls:
            print(f"instance: {url}   (curl {url}/readyz)")
        print(f"admin API key (shown once): {cluster.key('admin')}")
        print(f"logs: {cluster.log_dir}; Ctrl-C stops everything")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping")


if __name__ == "__main__":
    main()
