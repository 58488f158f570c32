"""Deep checks on a few renders: install, type-check, and run the generated project's own suite
against real PostgreSQL and NATS (the machine's, and the embedded ones), then boot the API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.answers import ANSWER_SETS
from tests.conftest import project_env, render, run

# Services the "from environment" runs use: the machine's, unless the caller points elsewhere.
SERVER_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")

# One xdist group: the deep runs share the machine's PostgreSQL, and each checks that it leaves no
# database behind, which only holds when no other run creates databases meanwhile.
DEEP_SETS = [
    pytest.param(({}, "3.13"), id="defaults-py3.13", marks=pytest.mark.xdist_group("deep")),
    pytest.param(
        (ANSWER_SETS["everything-off"], "3.12"),
        id="everything-off-py3.12",
        marks=pytest.mark.xdist_group("deep"),
    ),
]

LIST_DATABASES = """
import asyncio, sys
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

async def main() -> None:
    engine = create_async_engine(sys.argv[1])
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT datname FROM pg_database"))
        print(",".join(sorted(row[0] for row in rows)))
    await engine.dispose()

asyncio.run(main())
"""

DELETE_STREAMS = """
import asyncio, sys
import nats

async def main() -> None:
    client = await nats.connect(sys.argv[1])
    for suffix in ("_tasks", "_dead_letter"):
        try:
            await client.jetstream().delete_stream(sys.argv[2] + suffix)
        except nats.js.errors.NotFoundError:
            pass
    await client.close()

asyncio.run(main())
"""

Synced = Callable[[dict[str, object]], Path]
Case = tuple[dict[str, object], str]


@pytest.fixture(scope="session")
def synced() -> Iterator[Synced]:
    """Render and ``uv sync`` once per answer set, apart from the renders the fast checks read.

    The renders live outside pytest's temp folder: run as root, the embedded PostgreSQL runs as
    another user that must reach its binaries in the project's .venv, and every pytest start
    makes its own temp root private again.
    """
    root = Path(tempfile.mkdtemp(prefix="cookiecutter-deep-"))
    done: dict[str, Path] = {}

    def _synced(answers: dict[str, object]) -> Path:
        key = json.dumps(answers, sort_keys=True)
        if key not in done:
            folder = Path(tempfile.mkdtemp(dir=root))
            project = render(answers, folder, folder)
            run(["uv", "sync"], cwd=project)
            done[key] = project
        return done[key]

    yield _synced
    shutil.rmtree(root, ignore_errors=True)


def services_env(**extra: str | None) -> dict[str, str]:
    return project_env(TEST_DATABASE_URL=SERVER_DATABASE_URL, NATS_URL=NATS_URL, **extra)


def embedded_env() -> dict[str, str]:
    return project_env(TEST_DATABASE_URL=None, NATS_URL=None, DATABASE_URL=None)


def databases(project: Path) -> set[str]:
    result = run(["uv", "run", "python", "-c", LIST_DATABASES, SERVER_DATABASE_URL], project)
    return set(result.stdout.strip().split(","))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize("case", DEEP_SETS)
class TestGeneratedProject:
    def test_runs_on_the_chosen_python(self, synced: Synced, case: Case) -> None:
        answers, version = case
        project = synced(answers)

        result = run(["uv", "run", "python", "-c", "import sys; print(sys.version[:4])"], project)
        assert result.stdout.strip() == version

    def test_just_check_passes_against_the_machines_services(
        self, synced: Synced, case: Case
    ) -> None:
        project = synced(case[0])
        prefix = f"tmpl_{uuid.uuid4().hex[:8]}"

        result = run(
            ["uv", "run", "just", "check"], project, env=services_env(TEST_DATABASE_PREFIX=prefix)
        )

        assert "All checks passed!" in result.stdout + result.stderr
        assert "Success: no issues found" in result.stdout
        assert " passed" in result.stdout
        assert " failed" not in result.stdout
        left = [name for name in databases(project) if name.startswith(prefix)]
        assert left == [], "the tests left a database behind"

    def test_mypy_strict_from_the_command_line(self, synced: Synced, case: Case) -> None:
        project = synced(case[0])

        result = run(["uv", "run", "mypy", "--strict", "app", "devtools", "tests"], project)
        assert "Success: no issues found" in result.stdout

    def test_tests_pass_with_embedded_servers(self, synced: Synced, case: Case) -> None:
        project = synced(case[0])

        result = run(
            ["uv", "run", "pytest", "-q", "-p", "no:cacheprovider"], project, embedded_env()
        )
        assert " passed" in result.stdout
        assert " failed" not in result.stdout

    def test_api_boots_serves_and_stops(self, synced: Synced, case: Case) -> None:
        project = synced(case[0])
        port = free_port()
        prefix = f"template_test_{port}"
        env = services_env(
            DATABASE_URL=SERVER_DATABASE_URL,
            ENVIRONMENT="production",
            NATS_QUEUE_PREFIX=prefix,
        )
        server = subprocess.Popen(
            [
                str(project / ".venv/bin/uvicorn"),
                "--factory",
                "app.main:create_app",
                "--port",
                str(port),
                "--no-access-log",
            ],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            status, body, headers = wait_until_ready(f"http://127.0.0.1:{port}/health/ready")
            assert status == 200
            assert json.loads(body) == {"status": "ok", "checks": {"database": "ok", "nats": "ok"}}
            assert len(headers["x-request-id"]) == 32
        finally:
            server.send_signal(signal.SIGTERM)
            output, _ = server.communicate(timeout=30)
            run(["uv", "run", "python", "-c", DELETE_STREAMS, NATS_URL, prefix], project)
        # uvicorn re-raises the signal after a clean shutdown, so -SIGTERM is a clean exit too.
        assert server.returncode in {0, -signal.SIGTERM}, output
        assert "Application shutdown complete" in output
        events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert any(
            e.get("event") == "http.request" and e.get("path") == "/health/ready" for e in events
        ), output

    def test_setup_installs_local_pre_commit_hooks_that_pass(
        self, synced: Synced, case: Case
    ) -> None:
        project = synced(case[0])
        identity = ["-c", "user.name=Template Tests", "-c", "user.email=tests@example.com"]
        run(["git", "init", "--quiet"], project)
        run(["git", *identity, "add", "--all"], project)

        run(["uv", "run", "just", "setup"], project)
        result = run(["uv", "run", "pre-commit", "run", "--all-files"], project)

        assert (project / ".git" / "hooks" / "pre-commit").exists()
        assert "Passed" in result.stdout
        assert "Failed" not in result.stdout


def wait_until_ready(url: str, deadline_s: float = 30) -> tuple[int, str, dict[str, str]]:
    """Poll the readiness URL until it answers 200 or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local URL
                headers = {k.lower(): v for k, v in response.headers.items()}
                return response.status, response.read().decode(), headers
        except (urllib.error.URLError, ConnectionError) as exc:
            last = exc
            time.sleep(0.1)  # polling the server's own readiness, not waiting for a guess
    pytest.fail(f"{url} never answered 200: {last!r}")
