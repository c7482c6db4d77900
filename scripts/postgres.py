"""A throwaway PostgreSQL server on 127.0.0.1 for dev and tests.

    python -m scripts.postgres start [--dir DIR]   # prints the DSN
    python -m scripts.postgres stop [--dir DIR]

Needs Debian's ``postgresql`` package (initdb/pg_ctl on PATH or under
/usr/lib/postgresql/*/bin). As root, the server runs as the ``postgres`` OS user.
Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

DATABASE = "router_test"
PG_USER = "postgres"

SETTINGS = """
listen_addresses = '127.0.0.1'
unix_socket_directories = '{sock}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
"""


def cache_root() -> Path:
    return Path(os.environ.get("EVENT_ROUTER_CACHE") or Path.home() / ".cache" / "event-router")


def default_run_dir() -> Path:
    return cache_root() / "run" / "postgres"


def bin_dir() -> Path:
    """The directory holding initdb and pg_ctl (PATH first, else the newest Debian one)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError("initdb not found: apt-get install postgresql")
    return candidates[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_root() -> bool:
    return os.geteuid() == 0


def _ensure_pg_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", PG_USER], check=True)


def _reachable_by_pg_user(path: Path) -> bool:
    res = subprocess.run(["runuser", "-u", PG_USER, "--", "test", "-w", str(path)])
    return res.returncode == 0


class Postgres:
    """One PostgreSQL cluster whose files live under ``dir``.

    As root, when ``dir`` cannot be reached by the ``postgres`` user (e.g. it is
    under /root or pytest's 0700 tmp dirs), the cluster lives in a /tmp dir
    recorded in ``dir/state.json``.
    """

    def __init__(self, dir: Path | None = None) -> None:
        self.dir = (Path(dir) if dir is not None else default_run_dir()).absolute()
        self.port: int | None = None
        home = self._state().get("home")
        self.home: Path | None = Path(home) if home else None  # holds data/, sock/, postgres.log

    @property
    def dsn(self) -> str:
        if self.port is None:
            raise RuntimeError("postgres not started")
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _state(self) -> dict[str, str]:
        try:
            state: dict[str, str] = json.loads((self.dir / "state.json").read_text())
            return state
        except (OSError, ValueError):
            return {}

    def _run(self, *cmd: str, check: bool = True) -> int:
        prefix = ["runuser", "-u", PG_USER, "--"] if _as_root() else []
        res = subprocess.run(
            [*prefix, *cmd], stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if check and res.returncode != 0:
            log = self.home / "postgres.log" if self.home else None
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout}{res.stderr}\n{tail}")
        return res.returncode

    def _prepare_home(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.home is not None and self.home.is_dir():
            return self.home
        if not _as_root():
            return self.dir
        _ensure_pg_user()
        shutil.chown(self.dir, PG_USER)
        if _reachable_by_pg_user(self.dir):
            return self.dir
        home = Path(tempfile.mkdtemp(prefix="event-router-pg-"))
        shutil.chown(home, PG_USER)
        return home

    def start(self, timeout_s: int = 60) -> str:
        """initdb (first time), start on a free port, create the database; return the DSN."""
        bins = bin_dir()
        self.home = self._prepare_home()
        data, sock = self.home / "data", self.home / "sock"
        if not (data / "PG_VERSION").exists():
            self._run(
                str(bins / "initdb"),
                *("-D", str(data), "-U", PG_USER, "-E", "UTF8", "--locale=C", "--no-sync"),
                *("--auth-local=trust", "--auth-host=trust"),
            )
            with (data / "postgresql.conf").open("a") as conf:
                conf.write(SETTINGS.format(sock=sock))
        sock.mkdir(exist_ok=True)
        if _as_root():
            shutil.chown(sock, PG_USER)
        self.port = _free_port()
        log = self.home / "postgres.log"
        self._pg_ctl("-l", str(log), "-o", f"-p {self.port}", "-w", "-t", str(timeout_s), "start")
        state = {"dsn": self.dsn, "port": self.port, "home": str(self.home)}
        (self.dir / "state.json").write_text(json.dumps(state) + "\n")
        self._create_database()
        return self.dsn

    def _create_database(self) -> None:
        psql = shutil.which("psql") or str(bin_dir() / "psql")
        base = [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, "-d", "postgres"]
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        found = subprocess.run([*base, "-tAc", query], capture_output=True, text=True, check=True)
        if found.stdout.strip() != "1":
            subprocess.run([*base, "-qc", f"CREATE DATABASE {DATABASE}"], check=True)

    def _pg_ctl(self, *args: str, check: bool = True) -> int:
        assert self.home is not None
        data = str(self.home / "data")
        return self._run(str(bin_dir() / "pg_ctl"), "-D", data, *args, check=check)

    def running(self) -> bool:
        data = self.home / "data" if self.home else None
        return data is not None and data.is_dir() and self._pg_ctl("status", check=False) == 0

    def stop(self, *, remove: bool = False) -> None:
        """Fast shutdown (no-op when not running); ``remove`` also deletes the cluster."""
        if self.running():
            self._pg_ctl("-m", "fast", "stop")
        self.port = None
        if remove and self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            (self.dir / "state.json").unlink(missing_ok=True)
            self.home = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.postgres",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, default=None, help=f"default {default_run_dir()}")
    args = parser.parse_args(argv)
    pg = Postgres(args.dir)
    if args.command == "start":
        dsn = pg._state().get("dsn")
        print(dsn if dsn and pg.running() else pg.start())
    else:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
