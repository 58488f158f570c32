import pytest
from httpx import AsyncClient
from pydantic import SecretStr

from app.main import create_app
from app.settings import DatabaseSettings, NatsSettings, Settings
from devtools.embedded import free_port
from tests.helpers import lifespan_client


async def test_live_answers_ok(client: AsyncClient) -> None:
    response = await client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {}}


async def test_ready_checks_database_and_nats(client: AsyncClient) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "nats": "ok"}}


@pytest.mark.slow
async def test_ready_is_503_when_the_database_is_down(settings: Settings) -> None:
    closed = free_port()
    broken = settings.model_copy(
        update={
            "database": DatabaseSettings(
                url=SecretStr(f"postgresql+asyncpg://postgres@127.0.0.1:{closed}/nowhere")
            ),
            "nats": NatsSettings(url=f"nats://127.0.0.1:{closed}", connect_timeout=1),
        }
    )
    async with lifespan_client(create_app(broken)) as client:
        response = await client.get("/health/ready")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "not_ready"
    assert body["detail"] == "Not answering: database"


@pytest.mark.slow
async def test_nats_down_makes_the_api_degraded_not_unready(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"nats": NatsSettings(url=f"nats://127.0.0.1:{free_port()}", connect_timeout=1)}
    )
    async with lifespan_client(create_app(broken)) as client:
        response = await client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "checks": {"database": "ok", "nats": "down"}}
