"""An order created on the ``just dev`` stack is processed, and is still there next time."""

import httpx

from devtools.embedded import free_port
from tests.processes import dev_stack, scratch_folder, wait_for
from tests.test_dev import ready

NEW_ORDER = {
    "customer_email": "ada@example.com",
    "items": [{"sku": "BOOK-1", "quantity": 1, "unit_price": "3.00"}],
}


async def status_of(url: str) -> str:
    async with httpx.AsyncClient() as client:
        return str((await client.get(url, timeout=5)).json()["status"])


async def test_dev_stack_completes_an_order_and_keeps_it_across_restarts() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with scratch_folder() as data:
        with dev_stack(port, data) as first:
            await wait_for(lambda: ready(f"{base}/health/ready"), within=90, what="the API")
            async with httpx.AsyncClient() as client:
                created = await client.post(f"{base}/api/v1/orders", json=NEW_ORDER)
            order_url = f"{base}{created.headers['location']}"

            async def completed() -> bool:
                return await status_of(order_url) == "completed"

            await wait_for(completed, within=60, what="the order to complete")

        with dev_stack(port, data) as second:
            await wait_for(lambda: ready(f"{base}/health/ready"), within=90, what="a restart")
            assert await status_of(order_url) == "completed"

    assert first.returncode == 0
    assert second.returncode == 0
