"""A real three-node JetStream cluster: the queue scaled to three replicas. The failover of
a burst of orders is in tests/orders/test_cluster_failover.py."""

import uuid

import nats
import nats.errors
import pytest
from nats.js.errors import NotFoundError
from nats.js.errors import ServiceUnavailableError as Unavailable
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from tests.helpers import worker_broker
from tests.nats_servers import CLUSTER_API_TIMEOUT, Cluster, test_queue
from tests.processes import wait_for

pytestmark = pytest.mark.slow  # real processes or servers: see conftest.py

Factory = async_sessionmaker[AsyncSession]


def _settings(base: Settings, cluster: Cluster, prefix: str, replicas: int) -> Settings:
    return base.model_copy(
        update={"nats": test_queue(cluster.url, prefix, stream_replicas=replicas)}
    )


async def _delete_streams(cluster: Cluster, prefix: str) -> None:
    """Delete the test's streams. Right after a server was killed JetStream may not answer
    (its leaders are being elected again), so each delete is asked until it is answered."""
    async with cluster.client() as client:
        jetstream = client.jetstream(timeout=CLUSTER_API_TIMEOUT)
        for stream in (f"{prefix}_tasks", f"{prefix}_dead_letter"):

            async def deleted(name: str = stream) -> bool:
                try:
                    await jetstream.delete_stream(name)
                except NotFoundError:
                    return True
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError, Unavailable):
                    return False  # no leader to answer yet
                return True

            await wait_for(deleted, within=60, what=f"the deletion of {stream}")


@pytest.mark.slow(seconds=15)
async def test_an_existing_queue_is_scaled_to_the_replicas_asked(
    cluster: Cluster, settings: Settings
) -> None:
    prefix = f"h_{uuid.uuid4().hex[:10]}"
    try:
        async with worker_broker(_settings(settings, cluster, prefix, 1)) as single:
            info = await single.jetstream.stream_info(single.config.stream)
            assert info.config.num_replicas == 1

        async with worker_broker(_settings(settings, cluster, prefix, 3)) as replicated:
            js, config = replicated.jetstream, replicated.config

            async def replicated_everywhere() -> bool:
                streams = [
                    await js.stream_info(s) for s in (config.stream, config.dead_letter_stream)
                ]
                consumer = await js.consumer_info(config.stream, config.durable)
                groups = [s.cluster for s in streams] + [consumer.cluster]
                return all(
                    group is not None
                    and group.leader is not None
                    and len([peer for peer in group.replicas or [] if peer.current]) == 2
                    for group in groups
                )

            await wait_for(replicated_everywhere, within=30, what="3 current copies of each")
            for stream in (config.stream, config.dead_letter_stream):
                assert (await js.stream_info(stream)).config.num_replicas == 3
    finally:
        await _delete_streams(cluster, prefix)
