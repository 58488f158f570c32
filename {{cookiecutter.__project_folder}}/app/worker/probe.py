"""The worker's readiness, for orchestrators: ``python -m app.worker.probe`` exits 0 when a worker
here could work, 1 (naming what is missing) when it could not.

A worker needs NATS (unlike the API, which keeps accepting writes into the outbox while NATS is
down) and PostgreSQL, and its consumer must exist (a started worker creates it). The probe checks
those from outside the worker process, the way a Kubernetes exec probe or a compose healthcheck
runs it.
"""

import asyncio
import sys
from collections.abc import Sequence

from nats.js.errors import NotFoundError

from app.core import database
from app.settings import Settings, get_settings
from app.worker.connection import connect
from app.worker.queue import QueueConfig


async def problems(settings: Settings) -> list[str]:
    """What keeps a worker from working now; empty when nothing does."""
    found: list[str] = []
    config = QueueConfig.from_settings(settings)
    try:
        # nats-py keeps retrying a first connection unless attempts are bounded: bound both
        # (each server of a cluster may take connect_timeout to refuse).
        servers = len(config.connection.servers)
        async with asyncio.timeout(config.connect_timeout * (servers + 1) + 1):
            client = await connect(
                config.connection,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
            )
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the answer
        found.append(f"nats: {exc!r}")
    else:
        try:
            await client.jetstream().consumer_info(config.stream, config.durable)
        except NotFoundError:
            found.append(f"nats: no consumer {config.durable} on {config.stream}")
        finally:
            await client.close()
    engine = database.create_engine(settings.database, application_name="worker-probe")
    try:
        async with asyncio.timeout(settings.health.check_timeout):
            await database.ping(engine)
    except Exception as exc:  # noqa: BLE001 - any failure to query is the answer
        found.append(f"database: {exc!r}")
    finally:
        await engine.dispose()
    return found


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:  # noqa: ARG001 - no options yet
    """Print what is missing to stderr; return the exit code."""
    found = asyncio.run(problems(settings or get_settings()))
    for problem in found:
        sys.stderr.write(f"not ready: {problem}\n")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
