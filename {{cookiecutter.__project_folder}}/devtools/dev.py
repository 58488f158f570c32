"""``just dev``: the whole service on one machine, with nothing else installed.

Uses the PostgreSQL and NATS named by ``DATABASE_URL`` and ``NATS_URL`` (environment or
``.env``) when they are set; otherwise starts embedded ones whose data stays in ``.devdata/``
for the next start. Then applies the migrations and runs the API (with reload), a worker and the
scheduler until Ctrl-C, which stops everything.
"""

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from alembic.command import upgrade
from alembic.config import Config
from dotenv import dotenv_values
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.settings import SERVICE_NAME
from devtools.embedded import embedded_nats, embedded_postgresql

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TASKS = ["--fs-discover", "--tasks-pattern", "app/**/tasks.py", "--no-configure-logging"]


def configured(name: str, *, embedded: bool) -> str | None:
    """A setting from the environment or from ``.env``, as the app would read it."""
    if embedded:
        return None
    value = os.environ.get(name) or dotenv_values(PROJECT_ROOT / ".env").get(name)
    return value or None


async def ensure_database(server_url: str, name: str) -> None:
    """Create the service's database on the embedded server unless it exists."""
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    async with engine.connect() as connection:
        exists = await connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        )
        if not exists:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()


@contextmanager
def database(stack: ExitStack, data_dir: Path, *, embedded: bool) -> Iterator[str]:
    """The database URL to use, starting the embedded server when none is configured."""
    if url := configured("DATABASE_URL", embedded=embedded):
        yield url
        return
    server = stack.enter_context(embedded_postgresql(data_dir / "postgres"))
    asyncio.run(ensure_database(server, SERVICE_NAME))
    yield make_url(server).set(database=SERVICE_NAME).render_as_string(hide_password=False)


def nats_server(stack: ExitStack, data_dir: Path, port: int, *, embedded: bool) -> str:
    """The NATS URL to use, starting the embedded server when none is configured."""
    if url := configured("NATS_URL", embedded=embedded):
        return url
    return stack.enter_context(embedded_nats(data_dir / "nats", port=port))


def migrate(database_url: str) -> None:
    """``alembic upgrade head`` on the database, in this process (one interpreter less to start)."""
    config = Config(PROJECT_ROOT / "alembic.ini")
    config.attributes["database_url"] = database_url
    upgrade(config, "head")


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Run ``python -m <command>`` from the project root, in a process group of its own."""
    return subprocess.Popen(  # noqa: S603 - fixed commands
        [sys.executable, "-m", *command], cwd=PROJECT_ROOT, env=env, start_new_session=True
    )


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group (each one's graceful stop), SIGKILL what is left after 15 s."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the API")
    parser.add_argument("--nats-port", type=int, default=4222, help="port of embedded NATS")
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / ".devdata")
    parser.add_argument("--no-reload", action="store_true", help="do not restart on changes")
    parser.add_argument(
        "--embedded", action="store_true", help="embedded servers even when URLs are set"
    )
    parser.add_argument(
        "--workers", type=int, help="worker processes (default: taskiq's, one per CPU)"
    )
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)

    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    with ExitStack() as stack:
        database_url = stack.enter_context(database(stack, args.data_dir, embedded=args.embedded))
        nats_url = nats_server(stack, args.data_dir, args.nats_port, embedded=args.embedded)
        env = dict(os.environ)
        env.update(DATABASE_URL=database_url, NATS_URL=nats_url)
        migrate(database_url)
        uvicorn = ["uvicorn", "--factory", "app.main:create_app", "--port", str(args.port)]
        uvicorn += ["--no-access-log"] + ([] if args.no_reload else ["--reload"])
        worker = ["app.worker", "app.worker.broker:broker", *TASKS]
        worker += [] if args.workers is None else ["--workers", str(args.workers)]
        processes = [
            start(uvicorn, env),
            start(worker, env),
            start(["taskiq", "scheduler", "app.worker.scheduler:scheduler", *TASKS], env),
        ]
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        try:
            while not stopping and all(p.poll() is None for p in processes):
                time.sleep(0.5)  # supervising: a signal or a dead process ends the loop
        finally:
            stop_all(processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
