"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` binaries, a fresh
cluster made by `initdb` in a temporary folder, listening on 127.0.0.1 only (no Unix
socket), trust authentication for the `lorafleet` role, removed at the end.

PostgreSQL refuses to run as root; the tests run as root in CI, so every server command
then runs as the `postgres` user the Debian package creates (`runuser -u postgres`),
with the cluster's folder owned by that user. A missing PostgreSQL is a failure that
says how to install it (`make postgresql`), never a skip.

    server = PostgresServer.start()
    dsn = server.create_database("t1")    # postgresql://lorafleet@127.0.0.1:PORT/t1
    server.stop(); server.start_again()   # a restart mid-load, same data and port
    server.destroy()
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = ("PostgreSQL's server binaries (initdb, pg_ctl) were not found. The usage-ledger tests run a real "
                "PostgreSQL: run `make postgresql` (as root on Debian: apt-get install postgresql).")
ROLE = "lorafleet"


class PostgresMissing(RuntimeError):
    pass


def server_bindir() -> Path:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/<version>/bin
    (the package does not put them on PATH), the newest version first."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if (Path(bindir) / "initdb").exists() and (Path(bindir) / "pg_ctl").exists():
            return Path(bindir)
    raise PostgresMissing(INSTALL_HINT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bindir: Path, folder: Path, port: int, run_as: str | None):
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "server.log"
        self.port = port
        self._run_as = run_as

    # ------------------------------------------------------------------ lifetime

    @classmethod
    def start(cls, *, fsync: bool = False) -> "PostgresServer":
        """initdb + pg_ctl start. `fsync` off by default: the tests kill the server
        process, never the machine, so what PostgreSQL wrote to the OS survives."""
        bindir = server_bindir()
        run_as = None
        folder = Path(tempfile.mkdtemp(prefix="lorafleet-pg-"))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresMissing(f"running as root, and there is no `postgres` user to run the server as. {INSTALL_HINT}") from None
            os.chown(folder, user.pw_uid, user.pw_gid)
            run_as = "postgres"
        server = cls(bindir, folder, _free_port(), run_as)
        server._run("initdb", "-D", str(server.data), "-U", ROLE, "-A", "trust", "-E", "UTF8", "--no-sync")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(server.port),
            "unix_socket_directories": "''",
            "fsync": "on" if fsync else "off",
            "max_connections": "200",
            "log_min_messages": "warning",
        }
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        server.start_again()
        return server

    def start_again(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """`fast`: clients are disconnected, a clean shutdown; `immediate`: like a crash
        (recovery from the WAL at the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def wait_ready(self, timeout_s: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not accept connections in {timeout_s:g} s:\n{self.log_tail()}")
                time.sleep(0.1)

    # ------------------------------------------------------------------ databases

    def dsn(self, database: str) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its DSN."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self._run_as:
            command = ["runuser", "-u", self._run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n{self.log_tail()}")
