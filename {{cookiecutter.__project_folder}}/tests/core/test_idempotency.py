"""Expired idempotency keys are purged by a scheduled task."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.unit_of_work import Work
from app.models import IdempotencyRecord
from app.worker import tasks
from app.worker.broker import broker


def record(key: str, *, expires_in: float) -> IdempotencyRecord:
    return IdempotencyRecord(
        scope="POST /things",
        key=key,
        fingerprint="0" * 64,
        status_code=201,
        body=b"{}",
        headers={},
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
    )


async def test_purge_deletes_expired_keys_only(session: AsyncSession) -> None:
    session.add_all(
        [record(f"old-{n}", expires_in=-60) for n in range(5)] + [record("live", expires_in=60)]
    )
    await session.flush()

    deleted = await tasks.purge_idempotency_keys(Work(session=session))

    assert deleted == 5
    left = (
        await session.scalars(
            select(IdempotencyRecord.key).where(IdempotencyRecord.scope == "POST /things")
        )
    ).all()
    assert left == ["live"]


async def test_purge_takes_every_batch(session: AsyncSession) -> None:
    count = tasks.PURGE_BATCH + 3
    session.add_all([record(f"old-{n}", expires_in=-60) for n in range(count)])
    await session.flush()

    assert await tasks.purge_idempotency_keys(Work(session=session)) == count
    assert (await session.scalars(select(IdempotencyRecord.key))).all() == []


def test_purge_is_scheduled() -> None:
    task = broker.find_task("idempotency.purge")

    assert task is not None
    assert task.labels["schedule"] == [{"cron": "*/10 * * * *"}]
