"""The application factory: ``uvicorn --factory app.main:create_app``."""

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import structlog
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from app.api import include_api_routers
from app.core import database
from app.core.conditional import NotModifiedMiddleware
from app.core.database_errors import DatabaseErrorMiddleware
from app.core.errors import install_error_handlers
from app.core.logging import RequestContextMiddleware, configure_logging
from app.core.openapi import ProjectInfo, ServiceAPI
from app.core.outbox import Outbox
from app.health.checks import ReadinessProbe
from app.health.router import router as health_router
from app.settings import Environment, Settings, get_settings
from app.worker.broker import broker

log = structlog.get_logger(__name__)

QUEUE_RETRY_SECONDS = 2.0
# FastAPI's native OpenTelemetry instrumentation, off (TelemetrySettings).
TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


async def _connect_producer() -> None:
    """Connect the API to the task queue, retrying in the background while NATS is down.

    The API starts and accepts writes either way: their tasks wait in the outbox, and
    /health/ready reports NATS as degraded until the connection is made.
    """
    while True:
        try:
            await broker.startup()
        except Exception as exc:  # noqa: BLE001 - whatever failed, the answer is to retry
            log.error("queue.connect_failed", error=repr(exc), retry_in=QUEUE_RETRY_SECONDS)
            await asyncio.sleep(QUEUE_RETRY_SECONDS)
        else:
            return


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; every resource it holds is opened and closed by its lifespan."""
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = database.create_engine(settings.database, application_name=settings.service_name)
        app.state.engine = engine
        app.state.sessionmaker = database.create_sessionmaker(engine)
        app.state.database_gate = database.create_gate(settings.database)
        app.state.reader = database.Reader.on(engine, app.state.database_gate)
        outbox = Outbox(app.state.sessionmaker, broker, settings.outbox)
        app.state.outbox = outbox
        app.state.readiness = ReadinessProbe(
            {"database": partial(database.ping, engine), "nats": broker.ping},
            timeout=settings.health.check_timeout,
            # Writes go on while NATS is down (their tasks wait in the outbox): NATS down makes
            # the API degraded, not unready, so a blip never takes every replica out of rotation.
            required={"database"},
        )
        stop_waking = broker.on_reconnect(outbox.wake)
        relay = asyncio.create_task(outbox.run_relay()) if settings.outbox.relay_enabled else None
        # In a worker, taskiq runs this lifespan for the tasks' dependencies; the worker owns the
        # broker there. Elsewhere this process only publishes tasks.
        connecting: asyncio.Task[None] | None = None
        if not broker.is_worker_process:
            broker.configure(settings)
            connecting = asyncio.create_task(_connect_producer())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(connecting), settings.nats.connect_timeout + 1
                )
        if settings.environment is Environment.PRODUCTION:
            # What start-up made (modules, models, routes, pools) lives as long as the process:
            # frozen out of the cyclic garbage collector, a full collection no longer walks it.
            # Under load one took 110-130 ms (every request in flight waited) for a create.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            stop_waking()
            if relay is not None:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
            if connecting is not None:
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connecting
                await broker.shutdown()
            # The rows of the tasks published last are deleted before the pool closes.
            await outbox.settle()
            await engine.dispose()

    project = ProjectInfo.read()
    app = ServiceAPI(
        title=project.title,
        version=project.version,
        description=project.description,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        telemetry=None if settings.telemetry.enabled else TELEMETRY_OFF,
    )
    app.state.settings = settings
    install_error_handlers(app)
    # Innermost: a 304 stands for the route's 200, and the middlewares outside see the 304.
    app.add_middleware(NotModifiedMiddleware)
    # Inside RequestContextMiddleware: its problems carry the request id.
    app.add_middleware(DatabaseErrorMiddleware, settings=settings.database)
    app.add_middleware(RequestContextMiddleware)
    # The API's routes first: FastAPI tries routes in order, and most requests are the API's
    # (the probes' routes before them cost every API request about 3% of a read's CPU), then
    # the probes, then the documentation.
    include_api_routers(app)
    app.include_router(health_router)
    app.add_documentation_routes()
    return app
