"""A small typed repository base: the queries every table needs, nothing that hides the SQL."""

import uuid
from collections.abc import Sequence

from sqlalchemy import Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.interfaces import ORMOption

from app.core.database import Entity
from app.core.pagination import decode_cursor, encode_cursor
from app.core.unit_of_work import Work


class Repository[M: Entity]:
    """Common queries for one model; a subclass sets ``model`` and adds its own queries.

    It works in a unit of work: hot statements run as ``DriverStatement``s on
    ``await self.work.connection()``, ORM queries on ``self.session`` (a unit of work with an
    ORM session: a task's, or a request's begun with ``orm=True``).
    """

    model: type[M]

    def __init__(self, work: Work) -> None:
        self.work = work

    @property
    def session(self) -> AsyncSession:
        """The unit of work's ORM session."""
        return self.work.session

    async def get_by_id(
        self,
        row_id: uuid.UUID,
        *,
        options: Sequence[ORMOption] = (),
        for_update: bool = False,
    ) -> M | None:
        """The row with this id, or None; ``for_update`` locks it until the transaction ends."""
        return await self.session.get(
            self.model,
            row_id,
            options=options,
            with_for_update=for_update,
            # A locked read must see the committed state, not a stale copy in the identity map.
            populate_existing=for_update,
        )

    async def add(self, row: M) -> M:
        """Stage a new row and flush it, so server defaults (timestamps) are set."""
        self.session.add(row)
        await self.session.flush()
        return row

    async def page(
        self, statement: Select[M], *, limit: int, cursor: str | None
    ) -> tuple[list[M], str | None]:
        """One page of ``statement`` in creation order, and the cursor of the next page.

        Keyset pagination on (created_at, id): a page never repeats or skips a row that existed
        when paging started, whatever is inserted meanwhile.
        """
        if cursor is not None:
            after_created_at, after_id = decode_cursor(cursor)
            statement = statement.where(
                tuple_(self.model.created_at, self.model.id) > tuple_(after_created_at, after_id)
            )
        statement = statement.order_by(self.model.created_at, self.model.id).limit(limit + 1)
        rows = list((await self.session.scalars(statement)).all())
        if len(rows) <= limit:
            return rows, None
        last = rows[limit - 1]
        return rows[:limit], encode_cursor(last.created_at, last.id)
