"""Tasks of the service itself; each domain keeps its own in ``app/<domain>/tasks.py``."""

import structlog

from app.worker.broker import broker

log = structlog.get_logger(__name__)


@broker.task(task_name="worker.heartbeat", schedule=[{"cron": "* * * * *"}])
async def heartbeat() -> str:
    """A periodic sign of life in the logs; also the smallest example of a scheduled task."""
    log.info("worker.heartbeat")
    return "alive"
