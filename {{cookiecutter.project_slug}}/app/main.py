"""The application factory: ``uvicorn --factory app.main:create_app``."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from app.api import api_router
from app.core import database
from app.core.errors import install_error_handlers
from app.core.logging import RequestContextMiddleware, configure_logging
from app.health.checks import ReadinessProbe, ping_nats
from app.health.router import router as health_router
from app.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; every resource it holds is opened and closed by its lifespan."""
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = database.create_engine(settings.database, application_name=settings.service_name)
        app.state.engine = engine
        app.state.sessionmaker = database.create_sessionmaker(engine)
        app.state.readiness = ReadinessProbe(
            {
                "database": partial(database.ping, engine),
                "nats": partial(ping_nats, settings.nats.url, settings.nats.connect_timeout),
            },
            timeout=settings.health.check_timeout,
        )
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title=settings.service_name,
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health_router)
    app.include_router(api_router)
    return app
