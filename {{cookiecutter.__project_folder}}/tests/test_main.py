"""The application as a server runs it: the ASGI lifespan protocol, through every middleware."""

import asyncio
import gc

import pytest
from httpx import ASGITransport, AsyncClient
from opentelemetry import trace
from starlette.types import Message, Scope

from app.main import create_app
from app.settings import Environment, Settings, TelemetrySettings


async def test_the_app_starts_and_stops_through_the_asgi_lifespan_protocol(
    settings: Settings,
) -> None:
    app = create_app(settings)
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    for message in ("lifespan.startup", "lifespan.shutdown"):
        inbox.put_nowait({"type": message})

    async def receive() -> Message:
        return await inbox.get()

    async def send(message: Message) -> None:
        outbox.put_nowait(message)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with asyncio.timeout(30):
        await app(scope, receive, send)

    sent = [outbox.get_nowait()["type"] for _ in range(outbox.qsize())]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


class RecordingTracerProvider(trace.TracerProvider):
    """A configured OpenTelemetry provider as FastAPI sees one; records who asks for tracers."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def get_tracer(self, instrumenting_module_name: str, *_: object, **__: object) -> trace.Tracer:
        self.asked.append(instrumenting_module_name)
        return trace.NoOpTracer()


@pytest.mark.parametrize("enabled", [False, True])
async def test_fastapis_telemetry_traces_requests_only_when_enabled(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    provider = RecordingTracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    app = create_app(settings.model_copy(update={"telemetry": TelemetrySettings(enabled=enabled)}))

    async with AsyncClient(transport=ASGITransport(app), base_url="http://test") as client:
        response = await client.get("/health/live")

    assert response.status_code == 200
    assert ("fastapi" in provider.asked) is enabled


@pytest.mark.parametrize("environment", [Environment.TEST, Environment.PRODUCTION])
async def test_production_freezes_what_start_up_made_out_of_the_garbage_collector(
    settings: Settings, environment: Environment
) -> None:
    app = create_app(settings.model_copy(update={"environment": environment}))
    # Some interpreters start with a few objects frozen (Python 3.12: a few hundred).
    before = gc.get_freeze_count()
    try:
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
    finally:
        if gc.get_freeze_count() > before:
            gc.unfreeze()

    assert (frozen > before) is (environment is Environment.PRODUCTION)
