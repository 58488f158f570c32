"""``just dev`` brings up the whole service with nothing else running, and Ctrl-C stops it."""

import httpx

from devtools.embedded import free_port
from tests.processes import dev_stack, scratch_folder, wait_for

# How often a test asks the stack's API: each request costs the stack's processes some work.
POLL_EVERY = 0.2


async def ready(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(url, timeout=2)).status_code == 200
    except httpx.TransportError:
        return False


async def test_dev_serves_a_ready_api_then_stops_on_ctrl_c() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/health/ready"
    async with httpx.AsyncClient() as client:
        with scratch_folder() as data, dev_stack(port, data) as stack:
            await wait_for(lambda: ready(client, url), within=90, every=POLL_EVERY)

    assert stack.returncode == 0
