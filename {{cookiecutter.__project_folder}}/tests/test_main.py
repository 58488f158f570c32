"""The application as a server runs it: the ASGI lifespan protocol, through every middleware."""

import asyncio

from starlette.types import Message, Scope

from app.main import create_app
from app.settings import Settings


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
