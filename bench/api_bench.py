"""The HTTP API of a rendered project next to the raw limit of its stack, in one run.

Run it from the root of a rendered project (example domain), with the project's interpreter and
orjson for the raw app::

    uv run --with orjson python <template>/bench/api_bench.py

What it does:

1. creates a throwaway database on ``DATABASE_URL``'s server (default
   ``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``), migrates it with the project's
   Alembic and seeds completed orders with 2 items each (the reads), with SQL;
2. starts the project's API as production runs it (``uvicorn --factory app.main:create_app``,
   one process, uvloop and httptools, ``ENVIRONMENT=production``, ``LOG_LEVEL`` INFO unless
   ``--log-level``, a queue of its own on ``NATS_URL``) and ``raw_app.py`` (Starlette, an
   asyncpg pool of 10, orjson, nats-py) on the same database, each on a port of 127.0.0.1;
3. loads both with ``wrk`` (``-t1 -c32``, a warm-up, then a measured run, ``--latency``) for
   GET by id, GET a page of 20, POST an order (and its task), PATCH status (cancel; each
   request cancels another pending order of a pool seeded for that app and round), template and
   raw one after the other, ``--rounds`` times per path;
4. runs ``queue_bench.py`` (task throughput and kiq to start against raw JetStream) unless
   ``--skip-queue``;
5. prints the table with the ratios, the targets of issue 10, the errors and the versions.

Every database, stream, process and file the run creates is removed at its end, also when it
fails or is interrupted. Exit status 1 when a request failed (non-2xx or a socket error).
"""

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

import httpx
import nats
import structlog
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

# The project's packages (app, devtools, tests) come from the working directory, the project
# root; queue_bench from this folder.
sys.path.insert(0, str(Path.cwd()))
sys.path.insert(1, str(Path(__file__).resolve().parent))

# isort: off
# (Whether these are first-party depends on which project's linter looks at this file.)
import queue_bench
from app.settings import Environment
from devtools.embedded import free_port
from tests.helpers import delete_streams, throwaway_database

# isort: on

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_DATABASE_URL = queue_bench.DEFAULT_DATABASE_URL
DEFAULT_NATS_URL = queue_bench.DEFAULT_NATS_URL
READY_TIMEOUT = 60.0
HOST = "127.0.0.1"
# Pending orders per PATCH run: the app's best rate so far times the run's seconds times this,
# plus a margin; a pool that runs out shows as 409s (non-2xx), never silently.
PATCH_POOL_FACTOR = 1.5
PATCH_POOL_MIN = 2000
PATCH_POOL_MAX = 400_000
PATCH_RATE_GUESS = 10_000.0
ORDER_BODY = (
    '{"customer_email":"bench@example.com","items":['
    '{"sku":"BOOK-1","quantity":2,"unit_price":"9.50"},'
    '{"sku":"PEN-2","quantity":1,"unit_price":"2.25"}]}'
)
# Orders with 2 items (9.50 x 1 and 2.25 x 2) and the given status, created a millisecond
# apart from :start on; the new ids.
SEED = """
WITH new AS (
    INSERT INTO orders (id, customer_email, status, total, created_at, updated_at)
    SELECT gen_random_uuid(), 'bench' || g || '@example.com', CAST(:status AS varchar), 14.00,
        CAST(:start AS timestamptz) + g * interval '1 millisecond',
        CAST(:start AS timestamptz) + g * interval '1 millisecond'
    FROM generate_series(1, CAST(:count AS integer)) AS g
    RETURNING id
), items AS (
    INSERT INTO order_items (order_id, position, sku, quantity, unit_price)
    SELECT new.id, p, CASE p WHEN 0 THEN 'BOOK-1' ELSE 'PEN-2' END, 1 + p,
        CASE p WHEN 0 THEN 9.50 ELSE 2.25 END
    FROM new, generate_series(0, 1) AS p
)
SELECT id FROM new
"""

# --- wrk scripts --------------------------------------------------------------------------
# setup() numbers the threads; with ids, each thread takes every n-th id of the file. done()
# prints one line the benchmark reads: requests, duration (us), p50 and p99 (us), non-2xx or
# 3xx responses, and the connect, read, write and timeout errors.
LUA_COMMON = """
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

function done(summary, latency, requests)
  local e = summary.errors
  local f = math.floor
  io.write(string.format("BENCH-RESULT %d %d %d %d %d %d %d %d %d\\n",
    f(summary.requests), f(summary.duration), f(latency:percentile(50)),
    f(latency:percentile(99)), f(e.status), f(e.connect), f(e.read), f(e.write),
    f(e.timeout)))
end
"""
LUA_IDS = """
local ids = {}
local counter = 0
local base = ""

function init(args)
  base = args[1]
  local threads = tonumber(args[2])
  local k = 0
  for line in io.lines(args[3]) do
    if k % threads == tid then ids[#ids + 1] = line end
    k = k + 1
  end
  if #ids == 0 then error("no ids for thread " .. tid) end
end

local function next_id()
  counter = counter % #ids + 1
  return ids[counter]
end
"""
LUA_SCRIPTS = {
    "get": LUA_COMMON
    + LUA_IDS
    + """
function request()
  return wrk.format("GET", base .. "/" .. next_id())
end
""",
    "list": LUA_COMMON,
    "post": LUA_COMMON
    + f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{ORDER_BODY}'
""",
    "patch": LUA_COMMON
    + LUA_IDS
    + """
local headers = {["Content-Type"] = "application/json"}
function request()
  return wrk.format("PATCH", base .. "/" .. next_id() .. "/status", headers,
    '{"status":"cancelled"}')
end
""",
}


@dataclass(frozen=True)
class Endpoint:
    key: str
    label: str
    target: float | None  # the lowest ratio template / raw that meets issue 10


ENDPOINTS = (
    Endpoint("get", "GET /orders/{id}", 0.50),
    Endpoint("list", "GET /orders?limit=20", 0.40),
    Endpoint("post", "POST /orders (+ task)", 0.35),
    Endpoint("patch", "PATCH /orders/{id}/status", None),
)
POST_P99_TARGET_MS = 50.0
TASKS_TARGET = 4000.0
KIQ_P50_TARGET_MS = 2.0


@dataclass(frozen=True)
class Options:
    rounds: int
    warmup: int
    duration: int
    connections: int
    threads: int
    orders: int
    log_level: str
    endpoints: tuple[Endpoint, ...]
    skip_queue: bool
    tasks: int
    fastapi: bool


@dataclass(frozen=True)
class Run:
    """What one measured wrk run saw."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    # CPU seconds the server process used during the run (None where /proc is missing).
    cpu_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        """The server's CPU time per answered request, in microseconds (nan if unknown).

        Steadier than req/s on a shared machine: another process slows the server down, but
        costs it little CPU time per request."""
        if self.cpu_seconds is None or not self.requests:
            return float("nan")
        return self.cpu_seconds / self.requests * 1e6


@dataclass(frozen=True)
class Server:
    name: str
    prefix: str  # the orders collection's path
    port: int
    process: Process
    log: Path

    def url(self, path: str = "") -> str:
        return f"http://{HOST}:{self.port}{self.prefix}{path}"


@dataclass
class Measured:
    # (endpoint key, app name) -> one Run per round
    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)
    best_rate: dict[str, float] = field(default_factory=dict)

    def add(self, endpoint: str, app: str, run: Run) -> None:
        self.runs.setdefault((endpoint, app), []).append(run)
        self.best_rate[app] = max(self.best_rate.get(app, 0.0), run.rate)


def progress(message: str) -> None:
    sys.stderr.write(f"... {message}\n")
    sys.stderr.flush()


def tail(path: Path, lines: int = 30) -> str:
    return queue_bench.tail(path, lines)


# --- options --------------------------------------------------------------------------------


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--rounds", type=int, default=2, help="runs per path and app, interleaved (default 2)")
    add("--warmup", type=int, default=3, help="seconds of warm-up before each run (default 3)")
    add("--duration", type=int, default=8, help="seconds of each measured run (default 8)")
    add("--connections", type=int, default=32, help="wrk -c (default 32)")
    add("--threads", type=int, default=1, help="wrk -t (default 1)")
    add("--orders", type=int, default=5000, help="orders seeded for the reads (default 5000)")
    add(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="LOG_LEVEL of the project's API and worker (default INFO)",
    )
    add(
        "--paths",
        default=",".join(e.key for e in ENDPOINTS),
        help="which paths to measure, comma-separated (default get,list,post,patch)",
    )
    add("--skip-queue", action="store_true", help="do not run queue_bench.py")
    add(
        "--fastapi",
        action="store_true",
        help="also measure fastapi_app.py (plain FastAPI on the raw app's SQL), for scale",
    )
    add("--tasks", type=int, default=queue_bench.DEFAULT_TASKS, help="queue_bench.py --tasks")
    # Any from argparse below; each value has the type its option converts to.
    args = parser.parse_args(argv)
    keys = [key.strip() for key in str(args.paths).split(",") if key.strip()]
    known = {e.key: e for e in ENDPOINTS}
    if not keys or any(key not in known for key in keys):
        parser.error(f"--paths takes some of {', '.join(known)}")
    for name in ("rounds", "warmup", "duration", "connections", "threads"):
        if int(getattr(args, name)) < 1:
            parser.error(f"--{name} must be at least 1")
    if int(args.connections) < int(args.threads):
        parser.error("--connections must be at least --threads")
    if int(args.orders) < 100:  # noqa: PLR2004 - a page of 20 must be all seeded orders
        parser.error("--orders must be at least 100")
    if not 1 <= int(args.tasks) <= queue_bench.MAX_TASKS:
        parser.error(f"--tasks must be between 1 and {queue_bench.MAX_TASKS}")
    return Options(
        rounds=int(args.rounds),
        warmup=int(args.warmup),
        duration=int(args.duration),
        connections=int(args.connections),
        threads=int(args.threads),
        orders=int(args.orders),
        log_level=str(args.log_level),
        endpoints=tuple(e for e in ENDPOINTS if e.key in keys),
        skip_queue=bool(args.skip_queue),
        tasks=int(args.tasks),
        fastapi=bool(args.fastapi),
    )


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        msg = "wrk is missing: install it (Debian/Ubuntu: sudo apt-get install wrk)"
        raise SystemExit(msg)
    return found


def check_orjson() -> None:
    if find_spec("orjson") is None:
        msg = "the raw app needs orjson: run `uv run --with orjson python .../api_bench.py`"
        raise SystemExit(msg)


# --- database -------------------------------------------------------------------------------


async def spawn_to_file(command: Sequence[str], env: Mapping[str, str], log: Path) -> Process:
    """Start a command from the project root in its own process group, its output to ``log``."""
    with log.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            *command,
            cwd=Path.cwd(),
            env=dict(env),
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )


async def run_to_file(command: Sequence[str], env: Mapping[str, str], log: Path) -> int:
    """Run a command from the project root, its output to ``log``; its exit status."""
    process = await spawn_to_file(command, env, log)
    try:
        return await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def migrate(database_url: str, scratch: Path) -> None:
    progress("alembic upgrade head")
    log = scratch / "alembic.log"
    env = {**os.environ, "DATABASE_URL": database_url}
    status = await run_to_file([sys.executable, "-m", "alembic", "upgrade", "head"], env, log)
    if status != 0:
        msg = f"alembic upgrade head failed ({status}):\n{tail(log)}"
        raise RuntimeError(msg)


async def seed(
    engine: AsyncEngine, count: int, status: str, start: datetime, ids_file: Path
) -> None:
    """``count`` orders with 2 items each; their ids, one a line, to ``ids_file``."""
    async with engine.connect() as connection:
        result = await connection.execute(
            text(SEED), {"status": status, "start": start, "count": count}
        )
        ids = [str(row_id) for row_id in result.scalars()]
    write_lines(ids_file, ids)


def write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_and_remove(path: Path) -> str:
    found = path.read_text(encoding="utf-8", errors="replace")
    path.unlink()
    return found


async def analyze(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("VACUUM ANALYZE orders, order_items"))


async def server_version_of(engine: AsyncEngine) -> str:
    async with engine.connect() as connection:
        found = await connection.scalar(text("SHOW server_version"))
    return str(found)


# --- servers --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def server(
    name: str,
    *,
    arguments: Sequence[str],
    env: Mapping[str, str],
    prefix: str,
    ready_path: str,
    log: Path,
) -> AsyncIterator[Server]:
    """``python -m uvicorn <arguments>`` in its own process group on a free port, until it
    answers ``ready_path`` with 200; SIGTERM (then SIGKILL) at the end."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        *arguments,
        "--host",
        HOST,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
    ]
    process = await spawn_to_file(command, env, log)
    try:
        await wait_ready(name, process, f"http://{HOST}:{port}{ready_path}", log)
        progress(f"{name}: pid {process.pid}, http://{HOST}:{port}{prefix}")
        yield Server(name, prefix, port, process, log)
    finally:
        await queue_bench.stop_group(process)


async def wait_ready(name: str, process: Process, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if process.returncode is not None:
                msg = f"{name} exited with status {process.returncode}:\n{tail(log)}"
                raise RuntimeError(msg)
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code == httpx.codes.OK:
                    return
            if time.monotonic() > deadline:
                msg = f"{name} did not answer {url} within {READY_TIMEOUT} s:\n{tail(log)}"
                raise TimeoutError(msg)
            await asyncio.sleep(0.1)  # polling another process until it answers


@contextlib.asynccontextmanager
async def raw_stream(nats_url: str, name: str) -> AsyncIterator[str]:
    """The raw app's stream, configured as the project's task stream; its subject."""
    client = await nats.connect(nats_url, name="bench-api", connect_timeout=5)
    try:
        jetstream = client.jetstream()
        subject = f"{name}.tasks"
        await jetstream.add_stream(
            StreamConfig(
                name=name,
                subjects=[subject],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                duplicate_window=600.0,
            )
        )
        try:
            yield subject
        finally:
            with contextlib.suppress(NotFoundError):
                await jetstream.delete_stream(name)
    finally:
        await client.close()


# --- wrk ------------------------------------------------------------------------------------


async def wrk(
    binary: str, options: Options, *, url: str, script: Path, args: Sequence[str], seconds: int
) -> Run:
    output_fd, output_name = tempfile.mkstemp(prefix="wrk-", suffix=".txt", dir=script.parent)
    output = Path(output_name)
    command = [
        binary,
        f"-t{options.threads}",
        f"-c{options.connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        *args,
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=output_fd, stderr=asyncio.subprocess.STDOUT, start_new_session=True
    )
    os.close(output_fd)
    try:
        await asyncio.wait_for(process.wait(), seconds + 60)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    text_output = read_and_remove(output)
    for line in text_output.splitlines():
        if line.startswith("BENCH-RESULT "):
            numbers = [int(value) for value in line.split()[1:]]
            requests, duration, p50, p99, status, *socket = numbers
            return Run(requests, duration / 1e6, p50 / 1000, p99 / 1000, status, sum(socket))
    msg = f"wrk printed no result (status {process.returncode}):\n{text_output[-3000:]}"
    raise RuntimeError(msg)


def write_scripts(scratch: Path) -> dict[str, Path]:
    scripts: dict[str, Path] = {}
    for key, source in LUA_SCRIPTS.items():
        scripts[key] = scratch / f"{key}.lua"
        scripts[key].write_text(source, encoding="utf-8")
    return scripts


@dataclass(frozen=True)
class Load:
    """One wrk run's request: its URL and the script's arguments, for the warm-up and the run
    (they differ for PATCH: each needs pending orders of its own)."""

    url: str
    warmup_args: tuple[str, ...] = ()
    run_args: tuple[str, ...] = ()


async def measure_endpoint(
    endpoint: Endpoint,
    *,
    servers: Sequence[Server],
    loads: Mapping[tuple[int, str], Load],
    scripts: Mapping[str, Path],
    binary: str,
    options: Options,
    measured: Measured,
) -> None:
    for round_number in range(options.rounds):
        for app in servers:
            load = loads[round_number, app.name]
            script = scripts[endpoint.key]
            progress(
                f"{endpoint.label}, round {round_number + 1}, {app.name}: "
                f"{options.warmup} s warm-up, {options.duration} s run"
            )
            await wrk(
                binary,
                options,
                url=load.url,
                script=script,
                args=load.warmup_args,
                seconds=options.warmup,
            )
            cpu_before = cpu_seconds_of(app.process.pid)
            run = await wrk(
                binary,
                options,
                url=load.url,
                script=script,
                args=load.run_args,
                seconds=options.duration,
            )
            cpu_after = cpu_seconds_of(app.process.pid)
            if cpu_before is not None and cpu_after is not None:
                run = dataclasses.replace(run, cpu_seconds=cpu_after - cpu_before)
            if app.process.returncode is not None:
                msg = f"{app.name} exited with status {app.process.returncode}:\n{tail(app.log)}"
                raise RuntimeError(msg)
            measured.add(endpoint.key, app.name, run)
            errors = f", {run.non_2xx} non-2xx" if run.non_2xx else ""
            errors += f", {run.socket_errors} socket errors" if run.socket_errors else ""
            progress(
                f"  {run.rate:,.0f} req/s, p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms{errors}"
            )


async def prepare_loads(
    endpoint: Endpoint,
    *,
    servers: Sequence[Server],
    options: Options,
    engine: AsyncEngine,
    scratch: Path,
    measured: Measured,
) -> dict[tuple[int, str], Load]:
    """The URL and script arguments of each (round, app); for PATCH, seeds the pending orders
    each warm-up and run cancels (separate pools for each app, round and phase)."""
    threads = str(options.threads)
    loads: dict[tuple[int, str], Load] = {}
    start = datetime.now(UTC) - timedelta(hours=1)  # after the read pool, before new orders
    for round_number in range(options.rounds):
        for app in servers:
            key = (round_number, app.name)
            if endpoint.key == "get":
                ids = str(scratch / "read_ids.txt")
                args = (app.url(), threads, ids)
                loads[key] = Load(app.url(), args, args)
            elif endpoint.key == "list":
                loads[key] = Load(app.url("?limit=20"))
            elif endpoint.key == "post":
                loads[key] = Load(app.url())
            else:
                rate = measured.best_rate.get(app.name, PATCH_RATE_GUESS)
                pools: list[tuple[str, ...]] = []
                for phase, seconds in (("warmup", options.warmup), ("run", options.duration)):
                    count = math.ceil(rate * seconds * PATCH_POOL_FACTOR) + PATCH_POOL_MIN
                    count = min(count, PATCH_POOL_MAX)
                    ids_file = scratch / f"pending_{app.name}_{round_number}_{phase}.txt"
                    progress(f"seeding {count:,} pending orders for {app.name}'s {phase}")
                    await seed(engine, count, "pending", start, ids_file)
                    start += timedelta(milliseconds=count + 1)
                    pools.append((app.url(), threads, str(ids_file)))
                loads[key] = Load(app.url(), pools[0], pools[1])
    if endpoint.key == "patch":
        await analyze(engine)
    return loads


# --- report ---------------------------------------------------------------------------------


def cpu_seconds_of(pid: int) -> float | None:
    """User plus system CPU time of a process so far, from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3 of proc(5), utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mark(passed: bool) -> str:
    return "pass" if passed else "MISS"


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def wrk_version(binary: str) -> str:
    found = subprocess.run(  # noqa: S603 - a fixed command: `wrk -v` prints its version
        [binary, "-v"], capture_output=True, text=True, check=False, timeout=10
    )
    words = (found.stdout or found.stderr).split()
    return words[1] if len(words) > 1 else "?"


def rate_cells(runs: Sequence[Run]) -> str:
    """The median req/s, p50 and p99 of some runs, as three table cells."""
    return (
        f"| {median([run.rate for run in runs]):,.0f} "
        f"| {median([run.p50_ms for run in runs]):.1f} "
        f"| {median([run.p99_ms for run in runs]):.1f} "
    )


def rate_ratio(runs: Sequence[Run], baselines: Sequence[Run]) -> float:
    """The median over the rounds of req/s of ``runs`` / req/s of ``baselines``."""
    return median([r.rate / b.rate for r, b in zip(runs, baselines, strict=True) if b.rate > 0])


def api_table(options: Options, measured: Measured) -> list[str]:
    apps = "template/raw/FastAPI" if options.fastapi else "template/raw"
    lines = [
        f"HTTP API: one uvicorn process per app (uvloop, httptools), wrk -t{options.threads} "
        f"-c{options.connections}, {options.warmup} s warm-up + {options.duration} s per run, "
        f"{options.rounds} round(s) per path interleaved {apps}; "
        "each figure is the median of the rounds, the ratio the median of the per-round ratios",
        "",
        "| path | template req/s | p50 ms | p99 ms | raw req/s | p50 ms | p99 ms "
        "| ratio | target | CPU µs/req template | raw | CPU ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for endpoint in options.endpoints:
        template = measured.runs.get((endpoint.key, "template"), [])
        raw = measured.runs.get((endpoint.key, "raw"), [])
        ratio = rate_ratio(template, raw)
        cpu_ratios = [r.cpu_us / t.cpu_us for t, r in zip(template, raw, strict=True)]
        target = "-"
        if endpoint.target is not None:
            target = f">= {endpoint.target:.2f} {mark(ratio >= endpoint.target)}"
        if endpoint.key == "post":
            p99 = median([run.p99_ms for run in template])
            target += f"; p99 <= {POST_P99_TARGET_MS:.0f} ms {mark(p99 <= POST_P99_TARGET_MS)}"
        lines.append(
            f"| {endpoint.label} {rate_cells(template)}{rate_cells(raw)}"
            f"| {ratio:.2f} | {target} "
            f"| {median([run.cpu_us for run in template]):,.0f} "
            f"| {median([run.cpu_us for run in raw]):,.0f} "
            f"| {median(cpu_ratios):.2f} |"
        )
    return lines


def fastapi_table(options: Options, measured: Measured) -> list[str]:
    """Plain FastAPI (fastapi_app.py) beside both: FastAPI's own share of the gap, and the
    share of the project's layers."""
    lines = [
        "",
        "For scale, plain FastAPI on the raw app's SQL (fastapi_app.py), same runs:",
        "",
        "| path | FastAPI req/s | p50 ms | p99 ms | CPU µs/req | FastAPI / raw "
        "| template / FastAPI |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for endpoint in options.endpoints:
        template = measured.runs.get((endpoint.key, "template"), [])
        raw = measured.runs.get((endpoint.key, "raw"), [])
        plain = measured.runs.get((endpoint.key, "fastapi"), [])
        lines.append(
            f"| {endpoint.label} {rate_cells(plain)}"
            f"| {median([run.cpu_us for run in plain]):,.0f} "
            f"| {rate_ratio(plain, raw):.2f} | {rate_ratio(template, plain):.2f} |"
        )
    return lines


def rounds_detail(options: Options, measured: Measured) -> list[str]:
    lines = ["", "Each round (req/s, p50 / p99 ms; server CPU per request):"]
    for endpoint in options.endpoints:
        template = measured.runs.get((endpoint.key, "template"), [])
        raw = measured.runs.get((endpoint.key, "raw"), [])
        for number, (t, r) in enumerate(zip(template, raw, strict=True), start=1):
            ratio = t.rate / r.rate if r.rate > 0 else float("nan")
            line = (
                f"  {endpoint.label}, round {number}: template {t.rate:,.0f} "
                f"({t.p50_ms:.1f} / {t.p99_ms:.1f}; {t.cpu_us:,.0f} µs CPU), raw {r.rate:,.0f} "
                f"({r.p50_ms:.1f} / {r.p99_ms:.1f}; {r.cpu_us:,.0f} µs CPU), ratio {ratio:.2f}"
            )
            plain = measured.runs.get((endpoint.key, "fastapi"), [])
            if number <= len(plain):
                f = plain[number - 1]
                line += (
                    f"; FastAPI {f.rate:,.0f} ({f.p50_ms:.1f} / {f.p99_ms:.1f}; "
                    f"{f.cpu_us:,.0f} µs CPU)"
                )
            lines.append(line)
    return lines


def error_lines(measured: Measured) -> list[str]:
    lines: list[str] = []
    for (endpoint, app), runs in measured.runs.items():
        for number, run in enumerate(runs, start=1):
            if run.non_2xx or run.socket_errors:
                lines.append(
                    f"  ERRORS {app} {endpoint} round {number}: {run.non_2xx} non-2xx of "
                    f"{run.requests}, {run.socket_errors} socket errors"
                )
    return lines


def queue_table(results: queue_bench.Results) -> list[str]:
    tasks = results.template_end_to_end
    raw = results.raw_consume_batch1
    p50 = results.latency_p50_ms
    return [
        "",
        "| queue | template | raw JetStream | ratio | target |",
        "|---|---:|---:|---:|---|",
        f"| tasks end to end, 1 worker | {tasks:,.0f} tasks/s | {raw:,.0f} msg/s (consume, "
        f"fetch 1) | {queue_bench.ratio(tasks, raw):.2f} "
        f"| >= {TASKS_TARGET:,.0f}/s {mark(tasks >= TASKS_TARGET)} |",
        f"| kiq -> start, p50 / p95 | {p50:.2f} / {results.latency_p95_ms:.2f} ms | - | - "
        f"| p50 <= {KIQ_P50_TARGET_MS:.0f} ms {mark(p50 <= KIQ_P50_TARGET_MS)} |",
    ]


def versions_line(nats_server: str, postgres: str, wrk: str) -> str:
    names: tuple[str, ...] = (
        "fastapi",
        "starlette",
        "sqlalchemy",
        "asyncpg",
        "pydantic",
        "uvicorn",
        "uvloop",
    )
    names += ("httptools", "orjson", "nats-py", "taskiq")
    packages = ", ".join(f"{name} {package_version(name)}" for name in names)
    return (
        f"Python {platform.python_version()}, {packages}; nats-server {nats_server}, "
        f"PostgreSQL {postgres}, wrk {wrk}; {os.cpu_count()} CPUs"
    )


# --- the run --------------------------------------------------------------------------------


@dataclass
class Context:
    options: Options
    database_url: str
    nats_url: str
    wrk: str
    versions: dict[str, str] = field(default_factory=dict)
    api_log: Path | None = None
    api_log_summary: queue_bench.WorkerLog | None = None


def api_env(context: Context, database_url: str, prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ENVIRONMENT": "production",
            "LOG_LEVEL": context.options.log_level,
            "LOG_FORMAT": "json",
            "DATABASE_URL": database_url,
            "NATS_URL": context.nats_url,
            "NATS_QUEUE_PREFIX": prefix,
        }
    )
    return env


def raw_env(database_url: str, nats_url: str, subject: str) -> dict[str, str]:
    dsn = make_url(database_url).set(drivername="postgresql")
    env = dict(os.environ)
    env.update(
        {
            "BENCH_RAW_DSN": dsn.render_as_string(hide_password=False),
            "BENCH_RAW_NATS_URL": nats_url,
            "BENCH_RAW_SUBJECT": subject,
        }
    )
    return env


async def api_part(context: Context) -> Measured:
    options = context.options
    measured = Measured()
    run_id = uuid.uuid4().hex[:10]
    async with contextlib.AsyncExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-api-")))
        database_url = await stack.enter_async_context(
            throwaway_database(context.database_url, prefix="bench_api")
        )
        progress(f"database {make_url(database_url).database}")
        await migrate(database_url, scratch)
        engine = create_async_engine(database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        stack.push_async_callback(engine.dispose)
        context.versions["postgres"] = await server_version_of(engine)
        progress(f"seeding {options.orders:,} orders with 2 items each")
        start = datetime.now(UTC) - timedelta(days=1)
        await seed(engine, options.orders, "completed", start, scratch / "read_ids.txt")
        await analyze(engine)

        prefix = f"bench_api_{run_id}"
        stack.push_async_callback(delete_streams, context.nats_url, prefix)
        subject = await stack.enter_async_context(
            raw_stream(context.nats_url, f"bench_raw_api_{run_id}")
        )
        context.api_log = scratch / "template.log"
        template = await stack.enter_async_context(
            server(
                "template",
                arguments=["--factory", "app.main:create_app"],
                env=api_env(context, database_url, prefix),
                prefix="/api/v1/orders",
                ready_path="/health/ready",
                log=context.api_log,
            )
        )
        raw = await stack.enter_async_context(
            server(
                "raw",
                arguments=["--factory", "raw_app:create_app", "--app-dir", str(BENCH_DIR)],
                env=raw_env(database_url, context.nats_url, subject),
                prefix="/orders",
                ready_path="/orders?limit=1",
                log=scratch / "raw.log",
            )
        )
        servers: tuple[Server, ...] = (template, raw)
        if options.fastapi:
            plain = await stack.enter_async_context(
                server(
                    "fastapi",
                    arguments=["--factory", "fastapi_app:create_app", "--app-dir", str(BENCH_DIR)],
                    env=raw_env(database_url, context.nats_url, subject),
                    prefix="/orders",
                    ready_path="/orders?limit=1",
                    log=scratch / "fastapi.log",
                )
            )
            servers += (plain,)
        scripts = write_scripts(scratch)
        try:
            for endpoint in options.endpoints:
                loads = await prepare_loads(
                    endpoint,
                    servers=servers,
                    options=options,
                    engine=engine,
                    scratch=scratch,
                    measured=measured,
                )
                await measure_endpoint(
                    endpoint,
                    servers=servers,
                    loads=loads,
                    scripts=scripts,
                    binary=context.wrk,
                    options=options,
                    measured=measured,
                )
        except Exception:
            for app in servers:
                sys.stderr.write(f"--- {app.name} output, last lines ---\n{tail(app.log)}\n")
            raise
        finally:
            context.api_log_summary = queue_bench.read_worker_log(context.api_log)
    return measured


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM cancel the run once, so every cleanup runs to its end: a second
    signal (a terminal sends Ctrl-C to uv and to this process) must not cut the cleanup short."""
    this_run = asyncio.current_task()
    if this_run is None:
        return

    def stop(signal_name: str) -> None:
        if not this_run.cancelling():
            progress(f"{signal_name}: stopping, removing what the run created")
            this_run.cancel()

    loop = asyncio.get_running_loop()
    for caught in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(caught, stop, caught.name)


async def main(argv: Sequence[str]) -> int:
    options = parse_options(argv)
    binary = wrk_binary()
    check_orjson()
    context = Context(
        options=options,
        database_url=queue_bench.loopback_only(
            "DATABASE_URL", os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
        ),
        nats_url=queue_bench.loopback_only(
            "NATS_URL", os.environ.get("NATS_URL", DEFAULT_NATS_URL)
        ),
        wrk=binary,
    )
    # The worker of the queue part inherits it, as the API gets it.
    os.environ["LOG_LEVEL"] = options.log_level
    stop_on_signals()
    # The app's loggers in this process (the queue part's producer) write to stderr, with the
    # progress lines; stdout holds the report only.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    started = time.monotonic()
    measured = await api_part(context)
    queue: queue_bench.Results | None = None
    if not options.skip_queue:
        progress("queue_bench.py")
        queue = await queue_bench.run(
            options.tasks, context.nats_url, context.database_url, Environment.PRODUCTION
        )
    client = await nats.connect(context.nats_url, name="bench-api", connect_timeout=5)
    try:
        nats_server = queue_bench.server_version(client)
    finally:
        await client.close()

    lines = api_table(options, measured)
    if options.fastapi:
        lines += fastapi_table(options, measured)
    if queue is not None:
        lines += queue_table(queue)
    lines += rounds_detail(options, measured)
    errors = error_lines(measured)
    lines += ["", "Errors:", *errors] if errors else ["", "Errors: none (every response 2xx)"]
    if context.api_log_summary is not None:
        log = context.api_log_summary
        lines.append(
            f"Template API output: {log.lines} lines, {log.not_json} not JSON, "
            f"{log.warnings} JSON lines at warning or above (LOG_LEVEL={options.log_level})"
        )
    lines += [
        "",
        versions_line(nats_server, context.versions.get("postgres", "?"), wrk_version(binary)),
        f"Took {time.monotonic() - started:.0f} s.",
    ]
    if queue is not None:
        lines += ["", "queue_bench.py:", queue_bench.report(queue, options.tasks)]
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(sys.argv[1:])))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.stderr.write("interrupted (the servers, database, streams and files were removed)\n")
        sys.exit(130)
