"""SQLAlchemy 2 async on asyncpg: the engine, the session factory, the reader and the
declarative base.

The unit of work (a transaction that commits, then publishes its tasks) is in
``app.core.unit_of_work``; requests that only read take a ``Reader`` instead
(``Reader.of(request)``); both run ``DriverStatement``s on the driver's connection."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from types import TracebackType
from typing import Protocol, cast

import asyncpg
from fastapi import Request
from sqlalchemy import ClauseElement, DateTime, Dialect, MetaData, event, func, make_url, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.schema import ScalarElementColumnDefault
from sqlalchemy.util import greenlet_spawn

from app.core import serialization
from app.core.state import app_state
from app.settings import DatabaseSettings

# Stable constraint and index names, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """The base of every model; ``app.models`` imports them all for Alembic."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Server-generated columns (timestamps) come back with INSERT/UPDATE ... RETURNING, so reading
    # them after a flush costs no extra query.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - read by SQLAlchemy, never mutated


class TimestampMixin:
    """``created_at`` and ``updated_at``, set by the database, timezone-aware.

    ``clock_timestamp()`` rather than ``now()``: rows created in one transaction still get
    distinct, increasing times, which keyset pagination orders by.
    """

    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        server_default=text("clock_timestamp()"),
        onupdate=func.clock_timestamp(),
    )


class Entity(TimestampMixin):
    """Mixin of an aggregate root: a UUID primary key and timestamps (what ``Repository`` works
    with). Combine it with the base: ``class Order(Entity, Base)``."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class DatabaseConnectionError(ConnectionError):
    """The database server could not be reached (refused, unreachable, timed out).

    asyncpg raises the socket's own ``OSError`` when it cannot connect, which SQLAlchemy passes
    on unwrapped; this names it, so the error handling can tell it from any other ``OSError``.
    """


def milliseconds(seconds: float) -> str:
    """A duration as PostgreSQL's time settings take it, without a unit: milliseconds."""
    return str(round(seconds * 1000))


def _connect_or_name_the_failure(
    dialect: Dialect,
    _record: ConnectionPoolEntry,
    cargs: tuple[object, ...],
    cparams: dict[str, object],
) -> DBAPIConnection:
    try:
        return dialect.connect(*cargs, **cparams)
    except (OSError, TimeoutError) as exc:
        msg = f"cannot connect to the database: {type(exc).__name__}"
        raise DatabaseConnectionError(msg) from exc


def create_engine(settings: DatabaseSettings, *, application_name: str) -> AsyncEngine:
    """Build the engine; it connects lazily, so building it needs no running database.

    Every connection (API and worker alike: both build their engine here) carries the statement
    and lock timeouts of the settings.
    """
    engine = create_async_engine(
        settings.url.get_secret_value(),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        # No ping before each checkout: it is a round trip per request. A connection the server
        # dropped fails its request with 503 database_unavailable (app.core.database_errors), and
        # SQLAlchemy then invalidates the pool's older connections, so the next requests reconnect.
        pool_pre_ping=False,
        echo=settings.echo,
        json_serializer=serialization.dumps,
        json_deserializer=serialization.loads,
        connect_args={
            "server_settings": {
                # Shows up in pg_stat_activity, so a DBA can tell the API from the worker.
                "application_name": application_name,
                "statement_timeout": milliseconds(settings.statement_timeout),
                "lock_timeout": milliseconds(settings.lock_timeout),
            }
        },
    )
    event.listen(engine.sync_engine, "do_connect", _connect_or_name_the_failure)
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (no lazy reloads in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """Run a trivial query; raises when the database cannot be reached."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def create_gate(settings: DatabaseSettings) -> asyncio.Semaphore:
    """Requests take the pool's connections through this gate, in arrival order.

    SQLAlchemy's async pool lets a request that arrives just as a connection comes back take it
    ahead of the requests already waiting; under load some of those waited for seconds (p99 1.4 s
    against a p50 of 13 ms, measured with 32 concurrent requests on a pool of 10). A FIFO
    semaphore as large as the pool keeps the waits fair.
    """
    return asyncio.Semaphore(settings.pool_size + settings.max_overflow)


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    """The session factory the lifespan put on the application's state."""
    factory: async_sessionmaker[AsyncSession] = app_state(
        request, "sessionmaker", async_sessionmaker
    )
    return factory


# The dialect the engine uses; its constructor takes the JSON serializer, as the engine's does.
_ASYNCPG_DIALECT: Callable[..., Dialect] = make_url("postgresql+asyncpg://").get_dialect()


class DriverStatement:
    """A Core statement compiled once into asyncpg's SQL, for the reads a ``Reader`` runs.

    SQLAlchemy's execution layer (cache key, execution context, result objects, a greenlet hop
    per call) cost about a fifth of the CPU of a GET that selects one JSON text, several times
    the driver's own share; a read needs none of it. Core still builds the statement (typed
    columns, no SQL strings in code), asyncpg prepares it once per connection and runs it. Values
    are bound by name, through the bind parameters' own type processing::

        BY_ID = DriverStatement(select(...).where(Order.id == bindparam("order_id")))
        row = await connection.fetchrow(BY_ID.sql, *BY_ID.arguments(order_id=order_id))

    Results come back as asyncpg decodes them, with no SQLAlchemy result processing: select text
    (PostgreSQL can build the JSON), numbers, UUIDs and timestamps.

    Writes on a hot path run the same way, inside their unit of work::

        NEW_ORDER = DriverStatement(insert(orders), columns=["id", "customer_email", ...])
        driver = await work.connection()
        row = await driver.fetchrow(NEW_ORDER.sql, *NEW_ORDER.arguments(id=..., ...))
    """

    dialect: Dialect = _ASYNCPG_DIALECT(json_serializer=serialization.dumps)

    def __init__(self, statement: ClauseElement, *, columns: Sequence[str] | None = None) -> None:
        # ``columns``: for an INSERT or UPDATE, the columns it sets, each bound by its own name
        # (as SQLAlchemy compiles it for an execute with those parameters); the others keep their
        # defaults.
        compiled = statement.compile(dialect=self.dialect, column_keys=columns)
        if not isinstance(compiled, SQLCompiler):  # pragma: no cover - a DDL or other construct
            msg = f"not a statement: {statement!r}"
            raise TypeError(msg)
        self.sql = compiled.string
        self._names = tuple(compiled.positiontup or ())
        self._processors = {
            name: bind.type.dialect_impl(self.dialect).bind_processor(self.dialect)
            for name, bind in compiled.binds.items()
        }
        # Values fixed in the statement (literals), processed once.
        self._fixed = {
            name: self._process(name, bind.value)
            for name, bind in compiled.binds.items()
            if not bind.required
        }
        # Columns left out of an INSERT or UPDATE whose default SQLAlchemy computes in Python
        # (``default=0``): their value, as an execute would send it.
        for column, default in [
            *((column, column.default) for column in compiled.insert_prefetch),
            *((column, column.onupdate) for column in compiled.update_prefetch),
        ]:
            if not isinstance(default, ScalarElementColumnDefault):
                msg = f"{column.key} has a default computed for each row: give it a value"
                raise TypeError(msg)
            self._fixed[column.key] = self._process(column.key, default.arg)
        self._required = frozenset(compiled.binds) - frozenset(self._fixed)

    def _process(self, name: str, value: object) -> object:
        processor = self._processors[name]
        return value if processor is None or value is None else processor(value)

    def arguments(self, **values: object) -> list[object]:
        """The statement's arguments in the driver's order; every bind parameter without a
        value in the statement needs one."""
        if missing := self._required - values.keys():
            msg = f"no value for {', '.join(sorted(missing))}"
            raise TypeError(msg)
        if unknown := values.keys() - self._required:
            msg = f"the statement has no parameter {', '.join(sorted(unknown))}"
            raise TypeError(msg)
        return [
            self._process(name, values[name]) if name in values else self._fixed[name]
            for name in self._names
        ]


class Leased(Protocol):
    """A connection a read (or a unit of work) holds: asyncpg's connection, how to take it out
    of the pool when it failed, and how to give it back."""

    @property
    def driver(self) -> asyncpg.Connection: ...

    async def invalidate(self, exc: BaseException) -> None: ...

    async def give_back(self) -> None: ...


# How a reader gets its connection.
Lease = Callable[[], Awaitable[Leased]]


# Tasks that start at once, in the caller's turn of the event loop, and finish there when they
# never wait (asyncio's own factory, public since Python 3.12).
_eager_task = asyncio.create_eager_task_factory(asyncio.Task)


async def _to_the_end(step: Coroutine[object, object, None]) -> None:
    """Run a step of cleanup to its end even when this task is cancelled meanwhile, then let
    the cancellation go on. An anyio cancel scope cancels every wait inside it, and closing a
    connection that was cut short leaves it half closed (SQLAlchemy's own connections guard
    their close the same way).

    The step runs in a task of its own, started eagerly: a connection going back to the pool
    usually sends nothing, so the task is done before this returns, without a trip round the
    event loop (about 2% of a GET's CPU, against ``asyncio.ensure_future``).
    """
    task = _eager_task(asyncio.get_running_loop(), step)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        raise cancelled


def _asyncpg(connection: object) -> asyncpg.Connection:
    if not isinstance(connection, asyncpg.Connection):  # pragma: no cover - another driver
        msg = "the database URL does not use asyncpg (postgresql+asyncpg://...)"
        raise TypeError(msg)
    return connection


class _Pooled:
    """A connection checked out of the engine's pool, itself: no SQLAlchemy ``Connection``
    wraps it and no isolation level is switched for a read and back (about 40 µs less CPU per
    read, measured in a loop, where asyncpg's own work for a read is about 50 µs). The pool's
    reset on return finds no transaction of SQLAlchemy's to roll back: it sends nothing."""

    __slots__ = ("connection", "driver", "lost")

    def __init__(self, connection: PoolProxiedConnection) -> None:
        self.connection = connection
        self.driver = _asyncpg(connection.driver_connection)
        self.lost = False

    @classmethod
    async def take(cls, engine: AsyncEngine) -> "_Pooled":
        return cls(await engine.raw_connection())

    async def invalidate(self, exc: BaseException) -> None:
        self.lost = True
        await _to_the_end(greenlet_spawn(self.connection.invalidate, exc))

    async def give_back(self) -> None:
        if not self.lost and self.driver.is_in_transaction():
            # A unit of work's transaction that did not end (its COMMIT or ROLLBACK failed or
            # was cancelled): the pool's reset would not end it either.
            await self.invalidate(ConnectionError("a transaction was left open"))
        await _to_the_end(greenlet_spawn(self.connection.close))  # back to the pool


class _Borrowed:
    """The connection of an open SQLAlchemy connection (a test's transaction): used in its
    transaction and given back as it was; invalidated through its owner."""

    __slots__ = ("driver", "owner")

    def __init__(self, driver: asyncpg.Connection, owner: AsyncConnection) -> None:
        self.driver = driver
        self.owner = owner

    async def invalidate(self, exc: BaseException) -> None:
        await self.owner.invalidate(exc)

    async def give_back(self) -> None:
        return


# What the driver raises when a statement, or the connection under it, fails.
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)


class _Use:
    """One use of a reader's connection: ``async with reader.connection() as connection``.

    A class rather than an ``asynccontextmanager``: a read takes one per statement, and the
    generator's machinery (two context managers) cost a GET about 3% of its CPU (measured:
    80 µs against 110 µs for taking and giving back a pooled connection).
    """

    __slots__ = ("gate", "lease", "leased")

    def __init__(self, lease: Lease, gate: asyncio.Semaphore | None) -> None:
        self.lease = lease
        self.gate = gate

    async def __aenter__(self) -> asyncpg.Connection:
        if self.gate is not None:
            await self.gate.acquire()
        try:
            self.leased = await self.lease()
        except BaseException:
            if self.gate is not None:
                self.gate.release()
            raise
        return self.leased.driver

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        exc: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        leased = self.leased
        try:
            if isinstance(exc, _DRIVER_ERRORS) and (
                leased.driver.is_closed() or not isinstance(exc, asyncpg.PostgresError | OSError)
            ):
                # The connection is gone or in doubt (a server that ended it, a protocol out of
                # step), and SQLAlchemy never saw it fail: take it out of the pool. Otherwise
                # the statement failed (a timeout, a rule), or something else in the block did
                # (a unit of work runs the caller's code): the connection is fine.
                await leased.invalidate(exc)
                msg = f"the database connection was lost: {type(exc).__name__}"
                raise DatabaseConnectionError(msg) from exc
        finally:
            try:
                await leased.give_back()
            finally:
                if self.gate is not None:
                    self.gate.release()


class Reader:
    """Connections for requests that only read: asyncpg's own connection, checked out of the
    engine's pool, so a read pays no BEGIN and COMMIT round trips (asyncpg runs a statement
    outside a transaction: one statement always sees one snapshot; a read that needs several
    statements to agree belongs in a unit of work) and no SQLAlchemy execution layer
    (``DriverStatement``).

    A read takes a connection for its statement only (``async with reader.connection()``), not
    for the whole request: it is back in the pool while the response is serialized and sent.
    Connections come through the gate in front of the pool (``create_gate``), as a unit of
    work's do. A connection the server dropped is taken out of the pool, and the read fails with
    ``DatabaseConnectionError`` (503 database_unavailable).
    """

    def __init__(self, lease: Lease, gate: asyncio.Semaphore | None = None) -> None:
        self.lease = lease
        self.gate = gate

    @staticmethod
    def of(request: Request) -> "Reader":
        """The lifespan's reader, for a route that only reads: ``Reader.of(request)``.

        Read off the request rather than taken as a dependency: FastAPI solves every dependency
        node on every request, and this one cost a read about 7% of its CPU (72k of 1,035k
        instructions, measured).
        """
        return app_state(request, "reader", Reader)

    @classmethod
    def on(cls, engine: AsyncEngine, gate: asyncio.Semaphore | None = None) -> "Reader":
        """Read through ``engine``'s pool, on the pooled connection itself."""

        async def pooled() -> Leased:
            return await _Pooled.take(engine)

        return cls(pooled, gate)

    @classmethod
    def within(cls, connection: AsyncConnection) -> "Reader":
        """Read on one open connection, in its transaction, and leave it open (a unit of work
        reads what it wrote; tests read inside their transaction)."""

        async def borrowed() -> Leased:
            driver = _asyncpg((await connection.get_raw_connection()).driver_connection)
            if connection.in_transaction() and not driver.is_in_transaction():
                # SQLAlchemy sends BEGIN with a transaction's first statement: make it happen,
                # so that a read on the driver's connection runs inside that transaction.
                await connection.exec_driver_sql("SELECT 1")
            return _Borrowed(driver, connection)

        return cls(borrowed)

    def connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """asyncpg's connection for one read, through the gate."""
        return _Use(self.lease, self.gate)


class _LazilyBegun(Protocol):
    # SQLAlchemy's asyncpg adapter: it sends BEGIN with the first statement it runs itself.
    async def _start_transaction(self) -> None: ...


# Key of AsyncSession.info: the driver's connection of the session's current transaction.
_DRIVER = "driver_connection"


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """asyncpg's connection under ``session``'s transaction, the transaction begun: a unit of
    work runs its hot writes there as ``DriverStatement``s (about 200k CPU instructions less per
    statement than ``session.execute``, measured), committed or rolled back with the session's
    own statements and flushes.

    SQLAlchemy's asyncpg adapter begins its transaction lazily, with the first statement it
    runs; a statement sent to the driver before that would run on its own and commit at once.
    So this begins it (``_start_transaction``: private, the one way to begin without sending a
    statement; ``tests/core/test_database.py`` fails should it change). The connection is kept
    for the rest of the session's transaction.
    """
    transaction = session.sync_session.get_transaction()
    cached: tuple[object, asyncpg.Connection] | None = session.info.get(_DRIVER)
    if cached is not None and transaction is not None and cached[0] is transaction:
        return cached[1]
    raw = await (await session.connection()).get_raw_connection()
    driver = _asyncpg(raw.driver_connection)
    if not driver.is_in_transaction():
        await cast("_LazilyBegun", raw.dbapi_connection)._start_transaction()
    session.info[_DRIVER] = (session.sync_session.get_transaction(), driver)
    return driver
