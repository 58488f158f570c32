"""An order created on the ``just dev`` stack is processed, and is still there next time."""

import httpx

from devtools.embedded import free_port
from tests.processes import dev_stack, scratch_folder, wait_for
from tests.test_dev import POLL_EVERY, ready

NEW_ORDER = {
    "customer_email": "ada@example.com",
    "items": [{"sku": "BOOK-1", "quantity": 1, "unit_price": "3.00"}],
}


async def status_of(client: httpx.AsyncClient, url: str) -> str:
    return str((await client.get(url, timeout=5)).json()["status"])


async def test_dev_stack_completes_an_order_and_keeps_it_across_restarts() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        with scratch_folder() as data:
            with dev_stack(port, data) as first:
                await wait_for(
                    lambda: ready(client, f"{base}/health/ready"),
                    within=90,
                    what="the API",
                    every=POLL_EVERY,
                )
                created = await client.post(f"{base}/api/v1/orders", json=NEW_ORDER)
                order_url = f"{base}{created.headers['location']}"

                async def completed() -> bool:
                    return await status_of(client, order_url) == "completed"

                await wait_for(completed, within=60, what="the order to complete", every=POLL_EVERY)

            with dev_stack(port, data) as second:
                await wait_for(
                    lambda: ready(client, f"{base}/health/ready"),
                    within=90,
                    what="a restart",
                    every=POLL_EVERY,
                )
                assert await status_of(client, order_url) == "completed"

    assert first.returncode == 0
    assert second.returncode == 0
