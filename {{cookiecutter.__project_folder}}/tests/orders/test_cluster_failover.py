"""A real three-node JetStream cluster: a burst of orders survives the SIGKILL of the node that
leads the stream and the consumer and serves the worker."""

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nats
import nats.errors
import pytest
from httpx import AsyncClient
from nats.aio.client import Client
from pydantic import SecretStr
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.main import create_app
from app.models import Order
from app.orders.status import OrderStatus
from app.settings import DatabaseSettings, Environment, OutboxSettings, Settings
from tests.helpers import lifespan_client
from tests.nats_servers import CLUSTER_API_TIMEOUT, Cluster, Server, test_queue
from tests.processes import process_env, running, start_worker, stop, wait_for
from tests.worker.test_nats_cluster import _delete_streams

pytestmark = pytest.mark.slow  # real processes or servers: see conftest.py

Factory = async_sessionmaker[AsyncSession]

ORDER = {
    "customer_email": "ada@example.com",
    "items": [{"sku": "B-1", "quantity": 1, "unit_price": "5.00"}],
}
# Orders sent before the leader is killed, and after.
BEFORE, AFTER = 40, 40


Leader = Callable[[], Awaitable[str | None]]


async def _connected_to(cluster: Cluster, client_name: str) -> Server | None:
    """The live server the client of this name is connected to, if any."""

    def look() -> Server | None:
        for server in cluster.servers:
            if server.alive:
                connections = server.monitor("connz").get("connections") or []
                assert isinstance(connections, list)
                if any(c.get("name") == client_name for c in connections):
                    return server
        return None

    return await asyncio.to_thread(look)


def _leader_of(client: Client, stream: str, consumer: str | None = None) -> Leader:
    """The server leading the stream (or its consumer) now; ``None`` during an election."""
    jetstream = client.jetstream(timeout=CLUSTER_API_TIMEOUT)

    async def leader() -> str | None:
        try:
            if consumer is None:
                group = (await jetstream.stream_info(stream)).cluster
            else:
                group = (await jetstream.consumer_info(stream, consumer)).cluster
        except nats.errors.Error:  # no leader to answer yet
            return None
        return group.leader if group is not None else None

    return leader


async def _move_leader(client: Client, step_down: str, leader: Leader, name: str) -> None:
    """Ask a replicated group to be led from server ``name`` (``step_down``: its API subject,
    taking a preferred server), until it is."""
    request = json.dumps({"placement": {"preferred": name}}).encode()
    deadline = time.monotonic() + 30
    while (current := await leader()) != name:
        if time.monotonic() > deadline:
            msg = f"{step_down}: led from {current}, not {name}"
            raise TimeoutError(msg)
        if current is None:  # an election is under way: look again
            await wait_for(lambda: _elected(leader), within=10, what="a leader")
            continue
        with contextlib.suppress(nats.errors.TimeoutError):  # the reply may not come: look
            await client.request(f"$JS.API.{step_down}", request, timeout=5)
        await wait_for(lambda: _moved(leader, current), within=10, what="a new leader")


async def _elected(leader: Leader) -> bool:
    return await leader() is not None


async def _moved(leader: Leader, before: str) -> bool:
    return await leader() not in {None, before}


def _at(event: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(event["timestamp"]))


def _first(events: list[dict[str, object]], name: str, after: datetime) -> datetime | None:
    return next((_at(e) for e in events if e.get("event") == name and _at(e) > after), None)


async def _completed(factory: async_sessionmaker[AsyncSession], ids: list[uuid.UUID]) -> int:
    async with factory() as session:
        done = await session.scalar(
            select(func.count())
            .select_from(Order)
            .where(Order.id.in_(ids), Order.status == OrderStatus.COMPLETED)
        )
    return int(done or 0)


async def _post(api: AsyncClient, count: int) -> list[uuid.UUID]:
    responses = [await api.post("/api/v1/orders", json=ORDER) for _ in range(count)]
    assert [response.status_code for response in responses] == [201] * count
    return [uuid.UUID(response.json()["id"]) for response in responses]


@dataclass
class Failover:
    """What the worker's log and the cluster tell after the kill."""

    killed: Server
    killed_at: datetime
    events: list[dict[str, object]]
    new_server: Server | None
    new_leader: str | None

    def runs(self, event: str) -> Counter[tuple[str, str]]:
        """(task name, order id) of each ``event`` (task.started, order.fulfilled, ...)."""
        return Counter(
            (str(e.get("task_name")), str(e.get("order_id")))
            for e in self.events
            if e.get("event") == event
        )

    @property
    def noticed_at(self) -> datetime | None:
        """When the worker was connected again, to another server."""
        return _first(self.events, "queue.connected", self.killed_at)

    @property
    def resumed_at(self) -> datetime | None:
        """When the worker started its first task after it was connected again."""
        noticed = self.noticed_at
        return None if noticed is None else _first(self.events, "task.started", noticed)


async def _run_burst(
    cluster: Cluster, own: Settings, log: Path, ids: list[uuid.UUID], factory: Factory
) -> Failover:
    """Orders through the in-process API to a real worker process; the node that leads the
    stream and the consumer and serves the worker is killed after the first ``BEFORE``."""
    prefix = own.queue_prefix
    stream, durable = f"{prefix}_tasks", f"{prefix}_worker"
    env = process_env(own, NATS_STREAM_REPLICAS="3", ORDERS_FULFILMENT_SECONDS="0.05")
    async with cluster.client() as client, lifespan_client(create_app(own)) as api:
        with running(start_worker(env, output=log)) as worker:
            await wait_for(lambda: "queue.connected" in log.read_text(), what="the worker")
            home = await _connected_to(cluster, f"{durable}-worker")
            assert home is not None
            # The worst node to lose: it leads the stream and the consumer and serves the
            # worker's connection.
            await _move_leader(
                client, f"STREAM.LEADER.STEPDOWN.{stream}", _leader_of(client, stream), home.name
            )
            await _move_leader(
                client,
                f"CONSUMER.LEADER.STEPDOWN.{stream}.{durable}",
                _leader_of(client, stream, durable),
                home.name,
            )

            ids += await _post(api, BEFORE)
            killed_at = datetime.now(UTC)
            home.kill()
            ids += await _post(api, AFTER)  # the API keeps taking orders

            async def all_completed() -> bool:
                return await _completed(factory, ids) == len(ids)

            await wait_for(all_completed, within=120, what="every order to complete")
            new_server = await _connected_to(cluster, f"{durable}-worker")
            new_leader = await _leader_of(client, stream)()
            output = stop(worker)
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return Failover(home, killed_at, events, new_server, new_leader)


@pytest.mark.slow(seconds=12)
async def test_orders_complete_once_when_the_stream_leader_is_killed(
    cluster: Cluster, database_url: str, tmp_path: Path
) -> None:
    prefix = f"h_{uuid.uuid4().hex[:10]}"
    own = Settings(
        environment=Environment.TEST,
        database=DatabaseSettings(url=SecretStr(database_url), pool_size=5),
        nats=test_queue(cluster.url, prefix, stream_replicas=3),
        # The relay retries soon after a failed publish, as JetStream is back within seconds.
        outbox=OutboxSettings(
            relay_min_age=0.5, relay_interval=0.5, retry_delay=0.2, retry_max_delay=1.0
        ),
    )
    engine = create_async_engine(database_url)
    factory = async_sessionmaker(engine, expire_on_commit=False)
    ids: list[uuid.UUID] = []
    try:
        failover = await _run_burst(cluster, own, tmp_path / "worker.log", ids, factory)
        completed = await _completed(factory, ids)
    finally:
        async with factory.begin() as cleanup:
            await cleanup.execute(delete(Order).where(Order.id.in_(ids)))
        await engine.dispose()
        await _delete_streams(cluster, prefix)

    started = failover.runs("task.started")
    fulfilled = failover.runs("order.fulfilled")
    run_twice = sorted(task for task, count in started.items() if count > 1)
    fulfilled_twice = sorted(task for task, count in fulfilled.items() if count > 1)
    noticed, resumed = failover.noticed_at, failover.resumed_at
    assert noticed is not None
    assert resumed is not None
    sys.stdout.write(
        f"\nNATS cluster failover: {len(ids)} orders sent ({BEFORE} before the SIGKILL, {AFTER} "
        f"after); node killed: {failover.killed.name} (leader of the stream and the consumer, "
        f"the worker's server); completed: {completed}; fulfilled twice: {len(fulfilled_twice)};"
        f" tasks run again (ack lost): {len(run_twice)} of {started.total()} runs; "
        f"worker connected to {failover.new_server.name if failover.new_server else None} after "
        f"{(noticed - failover.killed_at).total_seconds():.2f} s, first task after "
        f"{(resumed - failover.killed_at).total_seconds():.2f} s; new stream leader: "
        f"{failover.new_leader}\n"
    )

    assert completed == len(ids) == BEFORE + AFTER
    # No order's work is done twice, and each order's tasks ran (at least once).
    assert fulfilled_twice == []
    for order_id in ids:
        assert fulfilled[("orders.fulfil", str(order_id))] == 1
        assert started[("orders.process", str(order_id))] >= 1
    # A task whose ack was lost (sent to the killed node, or while the consumer had no leader
    # or its new leader's interest had not reached the worker's server yet) runs again: every
    # extra run of a fulfilment found its order done and changed nothing.
    skipped = failover.runs("order.fulfil_skipped")
    for order_id in ids:
        task = ("orders.fulfil", str(order_id))
        assert started[task] == fulfilled[task] + skipped[task]
    assert failover.new_server is not None
    assert failover.new_server is not failover.killed
    assert failover.new_leader not in {None, failover.killed.name}
