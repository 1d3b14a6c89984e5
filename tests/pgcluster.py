"""A throwaway PostgreSQL cluster for tests, benchmarks and ``make db``: initdb with ``wal_level=logical``,
wal2json from the server's package, a free port on 127.0.0.1, its socket in the data folder.

Postgres refuses to run as root, so when we are root (CI, containers) the server runs as the ``postgres`` user
that Debian's package creates.

    python -m tests.pgcluster start --dir .local/pg --port 54329   # prints the URL
    python -m tests.pgcluster stop --dir .local/pg
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SERVER_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_connections": "200",
    "fsync": "off",  # throwaway clusters only: durability across an OS crash is not under test
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "listen_addresses": "'127.0.0.1'",
    "log_min_messages": "warning",
    "wal_sender_timeout": "60s",
}


def pg_bindir() -> Path:
    """Find the server binaries: ``PG_BINDIR``, ``pg_config --bindir``, then the newest Debian install."""
    if env := os.environ.get("PG_BINDIR"):
        return Path(env)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if debian:
        return debian[-1].parent
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())
    raise RuntimeError("no PostgreSQL server found: install postgresql-15 and postgresql-15-wal2json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    datadir: Path
    port: int
    user: str = "postgres"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def _as_server_user(self, args: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return args
        return ["runuser", "-u", "postgres", "--", *args]

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def init(self) -> None:
        bindir = pg_bindir()
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._chown(self.datadir)
        if os.geteuid() == 0:
            # The server user must be able to reach the data folder through its parents.
            for parent in self.datadir.resolve().parents:
                with contextlib.suppress(PermissionError):
                    mode = parent.stat().st_mode
                    if not mode & 0o001:
                        os.chmod(parent, mode | 0o011)
        subprocess.run(
            self._as_server_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    self.user,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        with (self.datadir / "postgresql.conf").open("a") as conf:
            for key, value in SERVER_SETTINGS.items():
                conf.write(f"{key} = {value}\n")
            conf.write(f"port = {self.port}\n")
            conf.write(f"unix_socket_directories = '{self.datadir.resolve()}'\n")
        with (self.datadir / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")

    def start(self) -> None:
        bindir = pg_bindir()
        if not (bindir.parent / "lib" / "wal2json.so").exists():
            raise RuntimeError(
                f"wal2json is not installed for {bindir.parent}: apt-get install "
                f"postgresql-{bindir.parent.name}-wal2json"
            )
        log = self.datadir / "server.log"
        subprocess.run(
            self._as_server_user(
                [str(bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(log), "-w", "-t", "60", "start"]
            ),
            check=True,
            capture_output=True,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        bindir = pg_bindir()
        subprocess.run(
            self._as_server_user([str(bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )

    def restart(self, mode: str = "immediate") -> None:
        """``pg_ctl restart -m MODE`` (``immediate``: no clean shutdown, crash recovery on start), then wait
        until the server accepts connections."""
        bindir = pg_bindir()
        log = self.datadir / "server.log"
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(log)]
        done = subprocess.run(
            self._as_server_user([*pg_ctl, "-m", mode, "-w", "-t", "60", "restart"]), capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed ({done.returncode}): {done.stdout} {done.stderr}")
        self.wait_ready(60.0)

    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.pgcluster")
    parser.add_argument("action", choices=["start", "stop", "url"])
    parser.add_argument("--dir", type=Path, default=Path(".local/pg"))
    parser.add_argument("--port", type=int, default=54329)
    args = parser.parse_args(argv)
    cluster = PgCluster(args.dir, args.port)
    if args.action == "start":
        if not (args.dir / "PG_VERSION").exists():
            cluster.init()
        if not cluster.running():
            cluster.start()
        else:
            cluster.wait_ready()
        print(cluster.url)
    elif args.action == "stop":
        cluster.stop()
    else:
        print(cluster.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
