"""The repository base on a table of its own, so it is tested whatever domains exist."""

import uuid

import pytest
from sqlalchemy import MetaData, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.core.database import NAMING_CONVENTION, Entity
from app.core.repository import Repository
from app.core.unit_of_work import Work


class ProbeBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Probe(Entity, ProbeBase):
    __tablename__ = "repository_probe"
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - as on the app's Base

    name: Mapped[str] = mapped_column(String(20))


class ProbeRepository(Repository[Probe]):
    model = Probe


@pytest.fixture
async def repository(session: AsyncSession) -> ProbeRepository:
    """A repository on a table that lives only in the test's transaction."""
    connection = await session.connection()
    await connection.run_sync(ProbeBase.metadata.create_all)
    return ProbeRepository(Work(session=session))


async def test_add_flushes_and_sets_server_timestamps(repository: ProbeRepository) -> None:
    probe = await repository.add(Probe(name="a"))

    assert isinstance(probe.id, uuid.UUID)
    assert probe.created_at.tzinfo is not None
    # Two clock_timestamp() defaults: equal, or a microsecond apart.
    assert probe.updated_at >= probe.created_at


async def test_get_by_id_finds_the_row_or_none(repository: ProbeRepository) -> None:
    probe = await repository.add(Probe(name="a"))

    assert await repository.get_by_id(probe.id) is probe
    assert await repository.get_by_id(uuid.uuid4()) is None


async def test_locked_read_sees_the_committed_state(
    repository: ProbeRepository, session: AsyncSession
) -> None:
    probe = await repository.add(Probe(name="before"))
    # Changed in the database behind the session's back (the identity map keeps "before").
    await session.execute(
        update(Probe).values(name="after").execution_options(synchronize_session=False)
    )

    locked = await repository.get_by_id(probe.id, for_update=True)

    assert locked is not None
    assert locked.name == "after"


async def test_page_walks_every_row_once_in_creation_order(repository: ProbeRepository) -> None:
    rows = [await repository.add(Probe(name=f"p{n}")) for n in range(7)]
    statement = select(Probe)

    seen: list[Probe] = []
    cursor = None
    while True:
        page, cursor = await repository.page(statement, limit=3, cursor=cursor)
        seen += page
        if cursor is None:
            break

    assert [row.id for row in seen] == [row.id for row in rows]


async def test_page_of_exactly_limit_rows_has_no_next_cursor(repository: ProbeRepository) -> None:
    for n in range(3):
        await repository.add(Probe(name=f"p{n}"))

    page, cursor = await repository.page(select(Probe), limit=3, cursor=None)

    assert len(page) == 3
    assert cursor is None


async def test_page_refuses_a_string_that_is_no_cursor(repository: ProbeRepository) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        await repository.page(select(Probe), limit=3, cursor="bogus")
