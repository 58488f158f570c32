"""``just dev`` brings up the whole service with nothing else running, and Ctrl-C stops it.

Rendered only without the example domain: with it, ``tests/orders/test_dev_orders.py`` checks
all of this on the way to processing an order, and each start of the stack costs seconds of CPU.
"""

import httpx
import pytest

from devtools.embedded import free_port
from tests.processes import POLL_EVERY, dev_stack, ready, scratch_folder, wait_for

pytestmark = pytest.mark.slow  # real processes or servers: see conftest.py


async def test_dev_serves_a_ready_api_then_stops_on_ctrl_c() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/health/ready"
    async with httpx.AsyncClient() as client:
        with scratch_folder() as data, dev_stack(port, data) as stack:
            await wait_for(lambda: ready(client, url), within=90, every=POLL_EVERY)

    assert stack.returncode == 0
