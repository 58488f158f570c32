"""CPU instructions per request: the project's API next to plain FastAPI and the raw app.

wrk's figures (``api_bench.py``) move with whatever else the machine does, by ±10% between
rounds on a busy day; the number of instructions a request costs barely moves (repeated runs
agree within about 0.2%). This counts them with callgrind, to compare two versions of a change
or to find what a layer costs; ``api_bench.py`` says what they are worth in requests per second.
Instructions are not time: a request that churns more memory, or spends more in the kernel
(callgrind counts neither cache misses nor system calls), costs more time per instruction.

Run it from the root of a rendered project (example domain), with valgrind installed::

    sudo apt-get install valgrind
    uv run --with orjson python <template>/bench/instructions.py [--paths get,list,post]

Each app runs in a process of its own under ``valgrind --tool=callgrind --instr-atstart=no``,
in-process through ASGI (no HTTP server or load generator): it starts its lifespan, sends two
warm-up batches of ``--requests`` requests, 32 at a time, and callgrind counts only while a third
batch runs (``callgrind_control -i on`` and ``off``). The apps are the project's
(``app.main:create_app``, production settings, JSON log lines at INFO written to /dev/null),
``fastapi_app.py`` and ``raw_app.py``, on one throwaway database seeded with 2,000 orders and on
streams of their own, which are removed at the end. It prints instructions per request and the
ratios raw / template and raw / FastAPI (the share of the raw app's cost in each: higher is
cheaper).
"""

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from starlette.types import ASGIApp, Message, Scope

# The project's packages (app, devtools, tests) come from the working directory, the project
# root; the other benchmarks from this folder.
sys.path.insert(0, str(Path.cwd()))
sys.path.insert(1, str(Path(__file__).resolve().parent))

# isort: off
# (Whether these are first-party depends on which project's linter looks at this file.)
import api_bench
from tests.helpers import delete_streams, throwaway_database

# isort: on

CONCURRENCY = 32
APPS = ("template", "fastapi", "raw")
PATHS = ("get", "list", "post")
ORDERS = 2000
ORDER_BODY = api_bench.ORDER_BODY.encode()


@dataclass(frozen=True)
class Options:
    paths: tuple[str, ...]
    apps: tuple[str, ...]
    requests: int


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--paths", default=",".join(PATHS), help="some of get,list,post")
    parser.add_argument("--apps", default=",".join(APPS), help="some of template,fastapi,raw")
    parser.add_argument(
        "--requests",
        type=int,
        default=320,
        help=f"requests counted per app and path, a multiple of {CONCURRENCY} (default 320)",
    )
    args = parser.parse_args(argv)
    paths = tuple(p for p in str(args.paths).split(",") if p)
    apps = tuple(a for a in str(args.apps).split(",") if a)
    if not paths or not set(paths) <= set(PATHS):
        parser.error(f"--paths takes some of {','.join(PATHS)}")
    if not apps or not set(apps) <= set(APPS):
        parser.error(f"--apps takes some of {','.join(APPS)}")
    if int(args.requests) < CONCURRENCY or int(args.requests) % CONCURRENCY:
        parser.error(f"--requests must be a positive multiple of {CONCURRENCY}")
    return Options(paths, apps, int(args.requests))


# --- the counted process ---------------------------------------------------------------------


def toggle(state: str) -> None:
    """Switch callgrind's counting on or off for this process. Valgrind reads the command while
    the process runs code, so this spins until ``callgrind_control`` has its answer."""
    control = subprocess.Popen(  # noqa: S603 - a fixed command
        ["callgrind_control", "-i", state, str(os.getpid())],  # noqa: S607 - valgrind's tool
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while control.poll() is None:
        sum(range(2000))


def build(app_name: str) -> tuple[ASGIApp, AbstractAsyncContextManager[object], str]:
    """The app, its lifespan and the prefix of its order routes."""
    if app_name == "template":
        from app.main import create_app  # noqa: PLC0415 - after the environment is set

        project = create_app()
        return project, project.router.lifespan_context(project), "/api/v1/orders"
    import fastapi_app  # noqa: PLC0415 - next to this file
    import raw_app  # noqa: PLC0415 - next to this file

    other = fastapi_app.create_app() if app_name == "fastapi" else raw_app.create_app()
    return other, other.router.lifespan_context(other), "/orders"


def request_of(path: str, prefix: str, order_id: str) -> tuple[Scope, bytes]:
    """The ASGI scope and the body of one request."""
    headers = [(b"host", b"bench")]
    method, route, query, body = "GET", f"{prefix}/{order_id}", b"", b""
    if path == "list":
        route, query = prefix, b"limit=20"
    elif path == "post":
        method, route, body = "POST", prefix, ORDER_BODY
        headers += [(b"content-type", b"application/json")]
        headers += [(b"content-length", str(len(body)).encode())]
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": route,
        "raw_path": route.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    return scope, body


async def counted(app_name: str, path: str, requests: int, ids: list[str]) -> None:
    app, lifespan, prefix = build(app_name)

    async def one(number: int) -> None:
        scope, body = request_of(path, prefix, ids[number % len(ids)])
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] >= 300:  # noqa: PLR2004 - HTTP status
            msg = f"{app_name} {path}: {sent}"
            raise RuntimeError(msg)

    async def batch() -> None:
        each = requests // CONCURRENCY

        async def client(number: int) -> None:
            for k in range(each):
                await one(number * each + k)

        await asyncio.gather(*(client(n) for n in range(CONCURRENCY)))

    async with lifespan:
        await batch()
        await batch()
        toggle("on")
        await batch()
        toggle("off")
        outbox = getattr(getattr(app, "state", None), "outbox", None)
        if outbox is not None:
            await outbox.settle()  # the deletes of published rows, before the pool closes


def child(app_name: str, path: str, requests: int, ids_file: str) -> None:
    # The project's log lines go nowhere: writing them costs system calls, not instructions.
    sys.stdout = Path(os.devnull).open("w", encoding="utf-8")  # noqa: SIM115 - for the whole run
    ids = Path(ids_file).read_text(encoding="utf-8").split()
    import uvloop  # noqa: PLC0415 - as uvicorn runs the apps

    uvloop.run(counted(app_name, path, requests, ids))


# --- the run ---------------------------------------------------------------------------------


def count(app_name: str, path: str, options: Options, env: dict[str, str], scratch: Path) -> float:
    """Instructions per request of one app and path, from a counted child process."""
    out = scratch / f"callgrind.{app_name}.{path}"
    log = scratch / f"{app_name}.{path}.log"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--child",
        app_name,
        path,
        str(options.requests),
        str(scratch / "ids.txt"),
    ]
    with log.open("wb") as sink:
        status = subprocess.run(  # noqa: S603 - fixed command
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, check=False
        ).returncode
    totals = (
        [line for line in out.read_text().splitlines() if line.startswith("totals:")]
        if out.exists()
        else []
    )
    if status != 0 or not totals:
        msg = f"{app_name} {path} failed ({status}):\n{api_bench.tail(log)}"
        raise RuntimeError(msg)
    return int(totals[0].split()[1]) / options.requests


async def prepare(scratch: Path, stack: contextlib.AsyncExitStack) -> dict[str, str]:
    """The database, streams and environment the three apps share."""
    server_url = os.environ.get("DATABASE_URL", api_bench.DEFAULT_DATABASE_URL)
    nats_url = os.environ.get("NATS_URL", api_bench.DEFAULT_NATS_URL)
    database_url = await stack.enter_async_context(
        throwaway_database(server_url, prefix="bench_instr")
    )
    await api_bench.migrate(database_url, scratch)
    engine = create_async_engine(database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        start = datetime.now(UTC) - timedelta(days=1)
        await api_bench.seed(engine, ORDERS, "completed", start, scratch / "ids.txt")
        await api_bench.analyze(engine)
    finally:
        await engine.dispose()
    run_id = uuid.uuid4().hex[:10]
    prefix = f"bench_instr_{run_id}"
    stack.push_async_callback(delete_streams, nats_url, prefix)
    subject = await stack.enter_async_context(
        api_bench.raw_stream(nats_url, f"bench_instr_raw_{run_id}")
    )
    env = api_bench.raw_env(database_url, nats_url, subject)
    env.update(
        {
            "ENVIRONMENT": "production",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            "DATABASE_URL": database_url,
            "NATS_URL": nats_url,
            "NATS_QUEUE_PREFIX": prefix,
        }
    )
    return env


def table(options: Options, found: dict[tuple[str, str], float]) -> list[str]:
    lines = [
        f"Instructions per request (callgrind), {options.requests} requests counted per app "
        f"and path, {CONCURRENCY} at a time, in-process through ASGI",
        "",
        "| path | template | FastAPI | raw | raw / template | raw / FastAPI |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for path in options.paths:

        def cell(app_name: str, path: str = path) -> str:
            value = found.get((app_name, path))
            return f"{value / 1000:,.0f}k" if value is not None else "-"

        def ratio(app_name: str, path: str = path) -> str:
            raw, other = found.get(("raw", path)), found.get((app_name, path))
            return f"{raw / other:.2f}" if raw and other else "-"

        lines.append(
            f"| {path} | {cell('template')} | {cell('fastapi')} | {cell('raw')} "
            f"| {ratio('template')} | {ratio('fastapi')} |"
        )
    return lines


async def main(argv: Sequence[str]) -> int:
    options = parse_options(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.stderr.write("valgrind is needed: sudo apt-get install valgrind\n")
        return 2
    api_bench.check_orjson()
    started = time.monotonic()
    found: dict[tuple[str, str], float] = {}
    async with contextlib.AsyncExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-instr-")))
        env = await prepare(scratch, stack)
        database = make_url(env["DATABASE_URL"]).database
        api_bench.progress(f"database {database}")
        for path in options.paths:
            for app_name in options.apps:
                api_bench.progress(f"{path}: {app_name} under callgrind")
                found[app_name, path] = await asyncio.to_thread(
                    count, app_name, path, options, env, scratch
                )
                api_bench.progress(f"  {found[app_name, path]:,.0f} instructions per request")
    lines = [*table(options, found), "", f"Took {time.monotonic() - started:.0f} s."]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":  # noqa: PLR2004 - the child's arguments
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        sys.exit(asyncio.run(main(sys.argv[1:])))
