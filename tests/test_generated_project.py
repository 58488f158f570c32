"""Deep checks on a few renders: install, type-check, and run the generated project's own suite
against real PostgreSQL and NATS (the machine's, and the embedded ones), then boot the API."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.answers import ANSWER_SETS
from tests.conftest import project_env, render, run
from tests.test_kubernetes import containers, kustomize, pod_specs

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

DATABASE = """
import asyncio, sys
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

async def main() -> None:
    engine = create_async_engine(sys.argv[1], isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        verb = "CREATE DATABASE" if sys.argv[2] == "create" else "DROP DATABASE IF EXISTS"
        await connection.execute(text(f'{verb} "{sys.argv[3]}"'))
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

        # `just test` as a laptop with nothing installed runs it: parallel, each test process
        # with embedded servers of its own.
        result = run(["uv", "run", "just", "test"], project, embedded_env())
        assert " passed" in result.stdout
        assert " failed" not in result.stdout

    def test_api_boots_serves_and_stops(self, synced: Synced, case: Case, tmp_path: Path) -> None:
        project = synced(case[0])
        log = tmp_path / "api.log"

        with running_api(project, log) as base_url:
            status, body, headers = wait_until_ready(f"{base_url}/health/ready")
            assert status == 200
            assert json.loads(body) == {"status": "ok", "checks": {"database": "ok", "nats": "ok"}}
            assert len(headers["x-request-id"]) == 32

        output = log.read_text()
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


DEFAULTS = pytest.mark.xdist_group("deep")


@DEFAULTS
def test_fuzzing_the_api_finds_nothing(synced: Synced) -> None:
    """``just fuzz``: schemathesis, every check and phase (stateful links too), fixed seed."""
    project = synced({})

    result = run(["uv", "run", "just", "fuzz"], project, env=services_env(), timeout=900)

    output = result.stdout + result.stderr
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, output[-20_000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts, output[-20_000:]
    assert counts[1] == counts[2], output[-20_000:]
    assert int(counts[1]) > 500, "the run generated too few cases to mean much"
    assert not [name for name in databases(project) if name.startswith("fuzz_")]


@DEFAULTS
def test_a_client_generated_from_the_document_drives_the_api(
    synced: Synced, tmp_path: Path
) -> None:
    project = synced({})

    with running_api(project, tmp_path / "api.log") as base_url:
        with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=10) as response:  # noqa: S310
            (tmp_path / "openapi.json").write_bytes(response.read())
        (tmp_path / "generator.yaml").write_text("post_hooks: []\n")
        generate = [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(tmp_path / "openapi.json"),
            "--config",
            str(tmp_path / "generator.yaml"),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / "service_client"),
        ]
        generated = run(generate, tmp_path, env=dict(os.environ))
        assert "Warning" not in generated.stdout + generated.stderr, generated.stdout
        modules = {path.stem for path in (tmp_path / "service_client/api").rglob("*.py")}
        assert {
            "check_liveness",
            "check_readiness",
            "create_order",
            "list_orders",
            "get_order",
            "change_status",
        } <= modules

        used = run(
            [sys.executable, "-c", CLIENT_SCRIPT, base_url],
            tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
        )
    assert used.stdout.strip() == "client ok"


# Uses the generated client as a frontend's code would: typed models in, typed models out.
CLIENT_SCRIPT = """
import sys
import uuid

from service_client import Client
from service_client.api.health import check_readiness
from service_client.api.orders import change_status, create_order, get_order, list_orders
from service_client.models import (
    ErrorCode, OrderCreate, OrderItemIn, OrderRead, PageOrderRead, Problem, StatusChange,
)

client = Client(base_url=sys.argv[1], raise_on_unexpected_status=True)
assert check_readiness.sync(client=client).status.value == "ok"

body = OrderCreate(
    customer_email="ada@example.com",
    items=[OrderItemIn(sku="BOOK-1", quantity=2, unit_price="9.50")],
)
created = create_order.sync_detailed(client=client, body=body)
assert created.status_code == 201, created.content
order = created.parsed
assert isinstance(order, OrderRead), order
assert created.headers["location"] == f"/api/v1/orders/{order.id}"

fetched = get_order.sync(order.id, client=client)
assert isinstance(fetched, OrderRead) and fetched.id == order.id and fetched.total == "19.00"

missing = get_order.sync(uuid.uuid4(), client=client)
assert isinstance(missing, Problem), missing
assert missing.code is ErrorCode.ORDER_NOT_FOUND and missing.status == 404

page = list_orders.sync(client=client, customer_email="ada@example.com", limit=5)
assert isinstance(page, PageOrderRead) and order.id in {item.id for item in page.items}

cancel = StatusChange.from_dict({"status": "cancelled"})
cancelled = change_status.sync(order.id, client=client, body=cancel)
assert isinstance(cancelled, OrderRead) and cancelled.status.value == "cancelled", cancelled
print("client ok")
"""


@contextmanager
def running_api(project: Path, log: Path) -> Iterator[str]:
    """Serve the render's API (production settings, the machine's services, a queue of its own)
    with its output in ``log``; yield its base URL once ready, stop it with SIGTERM after."""
    port = free_port()
    prefix = f"template_test_{port}"
    database = f"tmpl_api_{port}"
    env = services_env(
        DATABASE_URL=SERVER_DATABASE_URL.rsplit("/", 1)[0] + f"/{database}",
        ENVIRONMENT="production",
        NATS_QUEUE_PREFIX=prefix,
    )
    run(["uv", "run", "python", "-c", DATABASE, SERVER_DATABASE_URL, "create", database], project)
    run(["uv", "run", "alembic", "upgrade", "head"], project, env=env)
    command = [str(project / ".venv/bin/uvicorn"), "--factory", "app.main:create_app"]
    with log.open("wb") as output:
        server = subprocess.Popen(
            [*command, "--port", str(port), "--no-access-log"],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/health/ready")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        run(["uv", "run", "python", "-c", DELETE_STREAMS, NATS_URL, prefix], project)
        drop = ["uv", "run", "python", "-c", DATABASE, SERVER_DATABASE_URL, "drop", database]
        run(drop, project)
    # uvicorn re-raises the signal after a clean shutdown, so -SIGTERM is a clean exit too.
    assert server.returncode in {0, -signal.SIGTERM}, log.read_text()


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


# Every environment variable the service's settings read, those without a default, and the
# defaults the worker's grace period must cover; printed as JSON by the render's interpreter.
SETTINGS_NAMES = """
import importlib, json, pathlib
from pydantic_settings import BaseSettings
from app.settings import Settings

for path in sorted(pathlib.Path("app").glob("**/settings.py")):
    importlib.import_module(".".join(path.with_suffix("").parts))
names, required = set(), set()
# Every settings class of the service: each reads its own prefix; nested ones are listed too.
for model in BaseSettings.__subclasses__():
    if not model.__module__.startswith("app."):
        continue
    prefix = model.model_config.get("env_prefix", "")
    for field_name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):
            continue
        names.add((prefix + field_name).upper())
        if field.is_required():
            required.add((prefix + field_name).upper())
defaults = Settings()
print(json.dumps({
    "names": sorted(names),
    "required": sorted(required),
    "task_timeout": defaults.nats.task_timeout,
    "pull_timeout": defaults.nats.pull_timeout,
}))
"""


@DEFAULTS
def test_the_kubernetes_manifests_set_only_settings_the_service_reads(synced: Synced) -> None:
    """Every variable the manifests set is a setting, every setting without a default is set,
    and the workers' grace period covers the longest task and a pull."""
    project = synced({})
    found = json.loads(run(["uv", "run", "python", "-c", SETTINGS_NAMES], project).stdout)
    settings = set(found["names"])
    objects = kustomize(project / "deploy/k8s/overlays/example")

    variables: set[str] = set()
    for manifest in objects:
        if manifest["kind"] in {"ConfigMap", "Secret"}:
            variables |= set(manifest.get("data", {}))
        for spec in pod_specs([manifest]).values():
            for container in containers(spec):
                variables |= {variable["name"] for variable in container.get("env", [])}

    assert {"DATABASE_URL", "NATS_URL", "WORKER_CONCURRENCY"} <= settings, "settings were read"
    assert sorted(variables - settings) == [], "variables no setting reads"
    assert sorted(set(found["required"]) - variables) == [], "required settings left unset"
    worker = next(spec for name, spec in pod_specs(objects).items() if name.endswith("-worker"))
    longest = found["task_timeout"] + found["pull_timeout"]
    assert worker["terminationGracePeriodSeconds"] > longest
