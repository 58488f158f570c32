"""Tasks of the service itself; each domain keeps its own in ``app/<domain>/tasks.py``."""

import structlog

from app.core.idempotency import purge_expired
from app.core.unit_of_work import Work
from app.worker.broker import broker
from app.worker.dependencies import TaskWork

log = structlog.get_logger(__name__)

# Expired idempotency keys one purge deletes at most; the next run takes the rest.
PURGE_LIMIT = 50_000
PURGE_BATCH = 5_000


@broker.task(task_name="worker.heartbeat", schedule=[{"cron": "* * * * *"}])
async def heartbeat() -> str:
    """A periodic sign of life in the logs; also the smallest example of a scheduled task."""
    log.info("worker.heartbeat")
    return "alive"


@broker.task(task_name="idempotency.purge", schedule=[{"cron": "*/10 * * * *"}])
async def purge_idempotency_keys(work: Work = TaskWork) -> int:
    """Delete expired idempotency keys (an expired key is reusable at once anyway; this only
    keeps the table small)."""
    deleted = 0
    while deleted < PURGE_LIMIT:
        batch = await purge_expired(work.session, batch_size=PURGE_BATCH)
        deleted += batch
        if batch < PURGE_BATCH:
            break
    if deleted:
        log.info("idempotency.purged", count=deleted)
    return deleted
