"""Private Mosquitto, Redis and PostgreSQL servers a reliability test may stop and start.

Each runs on a free loopback port in its own directory, so the shared services on
1883/6379/5432 are never touched. Every wait is bounded in time.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import free_port, port_open, wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def stop_process(proc: subprocess.Popen | None, sig=signal.SIGTERM, timeout_s: float = 10) -> None:
    """Signal a process and wait for it; kill it if it outlives `timeout_s`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class _Server:
    """A server run as a child process on `self.port`; subclasses give its command line."""

    name = "server"
    port: int
    proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: port_open(self.port), 10, f"{self.name} on {self.port}")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


# --- Mosquitto ------------------------------------------------------------------------------------
class Mosquitto(_Server):
    """A private broker with persistence, so a durable subscriber loses nothing across restarts."""

    name = "mosquitto"

    def __init__(self, workdir: Path):
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "user root\n"  # running as root: keep it, so the persistence file stays writable
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "max_queued_messages 0\n"  # a durable test subscriber must not lose queued messages
            "max_inflight_messages 0\n"
            f"log_dest file {workdir}/mosquitto.log\n"
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return ["mosquitto", "-c", str(self.conf)]


# --- Redis ----------------------------------------------------------------------------------------
class Redis(_Server):
    name = "redis"

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(self.dir)),
        ]


# --- PostgreSQL -----------------------------------------------------------------------------------
class Postgres:
    """A throwaway cluster owned by the `postgres` OS user (root cannot run the server)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="ocppgw-pg-"))
        self.port = free_port()
        self.data = self.dir / "data"
        as_root = os.geteuid() == 0
        self._prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
        if as_root:
            shutil.chown(self.dir, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")

    def _run(self, *args) -> None:
        subprocess.run(
            [*self._prefix, *args], check=True, capture_output=True, timeout=60, cwd=self.dir
        )

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off -c synchronous_commit=off"
        )
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
            str(self.dir / "pg.log"), "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
