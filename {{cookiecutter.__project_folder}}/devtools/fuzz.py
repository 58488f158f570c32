"""``just fuzz``: schemathesis against the running API, as the template's own checks run it.

Starts the API (production settings) on a throwaway database and a queue of its own, on the
servers named by ``TEST_DATABASE_URL`` and ``NATS_URL`` or on embedded ones, then runs
``schemathesis run`` with ``schemathesis.toml`` (every check, every phase including the
stateful one, a fixed seed, a bounded number of examples) and any extra arguments, e.g.
``just fuzz --max-examples 500 --seed 7``. The database and the streams are removed at the end.
The exit status is schemathesis': 0 when it found nothing.
"""

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import httpx

from devtools.dev import PROJECT_ROOT, stop_all
from devtools.embedded import embedded_nats, embedded_postgresql, env_or_none, free_port
from tests.helpers import delete_streams, throwaway_database

CONFIG = PROJECT_ROOT / "schemathesis.toml"
READY_TIMEOUT = 60.0


async def wait_until_ready(url: str, api: subprocess.Popen[bytes]) -> None:
    """Poll the readiness route until it answers 200; fail if the API exits or never does."""
    async with httpx.AsyncClient(timeout=2) as client:
        async with asyncio.timeout(READY_TIMEOUT):
            while api.poll() is None:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(url)).status_code == httpx.codes.OK:
                        return
                await asyncio.sleep(0.1)  # polling the API's own readiness
    msg = f"the API exited with status {api.returncode} before it was ready"
    raise RuntimeError(msg)


def serve(command: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start ``python -m <command>`` in a process group of its own, its output to ``log``."""
    return subprocess.Popen(  # noqa: S603 - a fixed command
        [sys.executable, "-m", *command],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def fuzz(server_url: str, nats_url: str, log_dir: Path, extra: list[str]) -> int:
    """Serve the API on a database and queue of its own and run schemathesis against it."""
    prefix = f"fuzz_{uuid.uuid4().hex[:10]}"
    async with throwaway_database(server_url, prefix="fuzz") as database_url:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=database_url,
            NATS_URL=nats_url,
            NATS_QUEUE_PREFIX=prefix,
            ENVIRONMENT="production",
            LOG_LEVEL="WARNING",
        )
        migrate = [sys.executable, "-m", "alembic", "upgrade", "head"]
        await asyncio.to_thread(
            subprocess.run,
            migrate,
            cwd=PROJECT_ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = ["uvicorn", "--factory", "app.main:create_app", "--port", str(port)]
        with (log_dir / "api.log").open("wb") as log:
            api = serve([*command, "--no-access-log"], env, log)
            try:
                await wait_until_ready(f"{base}/health/ready", api)
                schemathesis = Path(sys.executable).with_name("schemathesis")
                run = [str(schemathesis), "--config-file", str(CONFIG), "run"]
                result = await asyncio.to_thread(
                    subprocess.run,
                    [*run, f"{base}/openapi.json", *extra],
                    cwd=PROJECT_ROOT,
                    check=False,
                )
            finally:
                stop_all([api])
                await delete_streams(nats_url, prefix)
    return result.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    _, extra = parser.parse_known_args(argv)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fuzz-")))
        server_url = env_or_none("TEST_DATABASE_URL") or stack.enter_context(embedded_postgresql())
        nats_url = env_or_none("NATS_URL") or stack.enter_context(embedded_nats(scratch / "nats"))
        status = asyncio.run(fuzz(server_url, nats_url, scratch, extra))
        if status != 0:
            log = (scratch / "api.log").read_text(errors="replace").splitlines()
            print("The API's log (end):", *log[-40:], sep="\n", file=sys.stderr)  # noqa: T201
    return status


if __name__ == "__main__":
    sys.exit(main())
