"""Everything the benchmark knows about ocppgw, kept in one place.

How to start it (`manage.py rungateway`), the settings it runs with (printed with the table),
how its database is prepared, how stations with passwords are created, and whether it can run
several processes behind one port (T8). run.py treats the gateway and `bare` alike otherwise.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "manage.py"
RUNGATEWAY = ROOT / "stations" / "management" / "commands" / "rungateway.py"
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432"
# msglog_pages.py uses ocppgw_bench; BENCH_PG_DB lets two benchmarks share one PostgreSQL
PG_DB = os.environ.get("BENCH_PG_DB", "ocppgw_bench_run")

# docs/performance.md: bare has no rate limit, no call timeout and no validation switch, so the
# gateway runs with its rate limit and upstream call timeout off, validation and message log on.
SETTINGS = {
    "DJANGO_SECRET_KEY": "bench",
    "DEBUG": "false",
    "OCPPGW_AUTH": "basic",
    "OCPPGW_RATE_PER_S": "0",
    "OCPPGW_CALL_TIMEOUT_S": "0",
    "OCPPGW_VALIDATION": "all",
    "OCPPGW_VALIDATION_FAILURE": "reject",
    "OCPPGW_LOG_ENABLED": "true",
    "OCPPGW_ADMIN_PORT": "0",
}

# The storm and idle measures use these stations; passwords are per station, 16-40 chars.
PASSWORD = "bench-{cid}-secret"  # loadgen fills in {cid}

CREATE_STATIONS = """
import time
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from stations import auth, identity
from stations.models import Station
N, PREFIX, PW = {n}, {prefix!r}, {pw!r}
t = time.monotonic()
cids = [f"{{PREFIX}}{{i:05d}}" for i in range(N)]
User = get_user_model()
User.objects.bulk_create(
    [User(username=c, password=make_password(PW.format(cid=c), hasher=auth.STATION_HASHER))
     for c in cids],
    batch_size=500,
)
ids = dict(User.objects.filter(username__in=cids).values_list("username", "id"))
Station.objects.bulk_create(
    [Station(cid=c, cid_key=identity.key(c), user_id=ids[c]) for c in cids], batch_size=500
)
print(f"created {{N}} stations in {{time.monotonic() - t:.1f}} s")
"""


def available() -> tuple[bool, str]:
    """Whether the gateway code is in the tree yet."""
    if not MANAGE.exists() or not RUNGATEWAY.exists():
        return False, "manage.py or stations/management/commands/rungateway.py missing"
    return True, ""


def supports_processes() -> bool:
    """T8 needs `rungateway --processes N`; until it exists T8 is reported n/a."""
    return RUNGATEWAY.exists() and "--processes" in RUNGATEWAY.read_text()


class Gateway:
    """One ocppgw deployment for the run: database, stations, and start/stop."""

    name = "ocppgw"

    def __init__(self, results: Path, mqtt_url: str, db: str, redis_url: str) -> None:
        self.results = results
        self.env = dict(os.environ) | SETTINGS | {"MQTT_URL": mqtt_url}
        self.env["PYTHONUNBUFFERED"] = "1"
        if redis_url:
            self.env["REDIS_URL"] = redis_url
        self.db = db
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.processes = 1
        self.log = None
        self.create_stations_code: str | None = None  # scale.py: one shared password hash

    def settings(self) -> dict:
        """The environment the gateway ran with (secret-free), for the report."""
        keys = [*SETTINGS, "MQTT_URL", "DATABASE_URL", "REDIS_URL"]
        out = {k: self.env[k] for k in keys if k in self.env}
        out["command"] = " ".join(self.command(self.port or 0, self.processes))
        return out

    def prepare(self, n_stations: int, prefix: str) -> str:
        """Fresh database, migrations, and n stations with per-station passwords."""
        if self.db == "postgres" and shutil.which("psql"):
            for sql in (
                f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)",
                f"CREATE DATABASE {PG_DB}",
            ):
                subprocess.run(
                    ["psql", f"{PG_ADMIN_URL}/postgres", "-q", "-c", sql],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
            self.env["DATABASE_URL"] = f"{PG_ADMIN_URL}/{PG_DB}"
        else:
            path = self.results / "bench.sqlite3"
            path.unlink(missing_ok=True)
            self.env["DATABASE_URL"] = f"sqlite:///{path}"
        self._manage(["migrate", "--noinput", "-v0"], timeout=300)
        self.forget_verified()
        code = self.create_stations_code or CREATE_STATIONS.format(
            n=n_stations, prefix=prefix, pw=PASSWORD
        )
        return self._manage(["shell", "-c", code], timeout=600).strip()

    def forget_verified(self) -> int:
        """Delete the verifications the gateway remembers in Redis (stations/auth.py,
        SharedCredentialCache): a fresh database must not meet a previous run's, and a storm
        "after a restart" is cold only without them."""
        url = self.env.get("REDIS_URL")
        if not url:
            return 0
        import redis

        client = redis.from_url(url)
        keys = list(client.scan_iter("ocppgw:auth:*", count=10000))
        for i in range(0, len(keys), 5000):
            client.delete(*keys[i : i + 5000])
        client.close()
        return len(keys)

    def _manage(self, argv: list[str], timeout: float) -> str:
        r = subprocess.run(
            [sys.executable, str(MANAGE), *argv],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise RuntimeError(f"manage.py {argv[0]} failed:\n{r.stderr[-3000:]}")
        return r.stdout

    def command(self, port: int, processes: int) -> list[str]:
        """The exact command line (from ROOT)."""
        cmd = ["python", "manage.py", "rungateway", "--host", "127.0.0.1", "--port", str(port)]
        return cmd + (["--processes", str(processes)] if processes > 1 else [])

    def start(self, port: int, processes: int = 1, timeout: float = 60) -> None:
        """Start rungateway and wait until /readyz answers 200 (database and broker up)."""
        self.port, self.processes = port, processes
        cmd = self.command(port, processes)
        cmd[0] = sys.executable
        self.log = open(self.results / f"ocppgw-{port}.log", "a")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"rungateway exited with {self.proc.returncode}, see {self.log.name}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        time.sleep(0.5)  # let the MQTT session and log writer settle
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"rungateway not ready within {timeout} s, see {self.log.name}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM (graceful shutdown), SIGKILL after 15 s."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
        if self.log:
            self.log.close()
