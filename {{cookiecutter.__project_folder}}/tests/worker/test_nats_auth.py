"""Credentials and TLS, against private nats-servers that require them.

Each test starts its own server (user and password, nkey, token, creds file of an operator
account, mutual TLS), checks that a worker's broker, the probe and the dead-letters command line
all get in with the right settings, and that the server really refuses a client without them.
"""

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.settings import NatsSettings, Settings
from app.worker import dead_letters, probe
from app.worker.broker import JetStreamBroker
from tests.nats_servers import (
    Server,
    certificates,
    nats_server,
    operator_mode,
    test_queue,
    user_nkey,
)

# Made per run: what a test must never find in output is no literal of the code.
SECRET = f"h-{uuid.uuid4().hex}"


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder for the server's configuration, store and keys, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="h-nats-auth-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _settings(base: Settings, nats: NatsSettings) -> Settings:
    return base.model_copy(update={"nats": nats})


@pytest.fixture
def prefix() -> str:
    return f"h_{uuid.uuid4().hex[:10]}"


async def _started_worker(settings: Settings) -> JetStreamBroker:
    worker = JetStreamBroker()
    worker.configure(settings)
    worker.is_worker_process = True
    # The broker retries a refused connection for ever: a failure here must fail, not hang.
    async with asyncio.timeout(30):
        await worker.startup()
    return worker


async def _gets_in(settings: Settings) -> None:
    """A worker's broker makes the streams and the consumer and publishes a task; the probe
    finds it ready; the dead-letters command line reads the (empty) dead letters."""
    worker = await _started_worker(settings)
    try:
        await worker.publish(f"h-{uuid.uuid4()}", b"{}", {})
        info = await worker.jetstream.stream_info(worker.config.stream)
        assert info.state.messages == 1
        assert await probe.problems(settings) == []
        assert await asyncio.to_thread(dead_letters.main, ["list"], settings=settings) == 0
    finally:
        for stream in (worker.config.stream, worker.config.dead_letter_stream):
            await worker.jetstream.delete_stream(stream)
        await worker.shutdown()


async def _is_refused(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """Both one-shot clients fail to connect, and say so without the secret."""
    found = await probe.problems(settings)
    assert found
    assert found[0].startswith("nats: ")
    assert await asyncio.to_thread(dead_letters.main, ["list"], settings=settings) == 1
    error = capsys.readouterr().err
    assert "cannot connect to NATS" in error
    assert SECRET not in error
    assert all(SECRET not in problem for problem in found)


@pytest.fixture
async def password_server(scratch: Path) -> AsyncIterator[Server]:
    rule = "authorization: " + "{" + f' user: h_user, password: "{SECRET}" ' + "}"
    with nats_server(scratch, rule) as server:
        yield server


async def test_user_and_password(
    password_server: Server, settings: Settings, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    right = test_queue(password_server.url, prefix, user="h_user", password=SECRET)
    assert SECRET not in repr(right)
    await _gets_in(_settings(settings, right))

    wrong = test_queue(password_server.url, prefix, user="h_user", password=uuid.uuid4().hex)
    await _is_refused(_settings(settings, wrong), capsys)
    nothing = test_queue(password_server.url, prefix)
    await _is_refused(_settings(settings, nothing), capsys)


async def test_credentials_in_the_url_still_work(
    password_server: Server, settings: Settings, prefix: str
) -> None:
    url = f"nats://h_user:{SECRET}@127.0.0.1:{password_server.port}"
    await _gets_in(_settings(settings, test_queue(url, prefix)))


async def test_nkey_seed(
    scratch: Path, settings: Settings, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seed, public = user_nkey()
    with nats_server(scratch, "authorization: { users: [ { nkey: " + public + " } ] }") as server:
        await _gets_in(_settings(settings, test_queue(server.url, prefix, nkey_seed=seed)))

        other_seed, _ = user_nkey()
        wrong = test_queue(server.url, prefix, nkey_seed=other_seed)
        await _is_refused(_settings(settings, wrong), capsys)


async def test_token(
    scratch: Path, settings: Settings, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with nats_server(scratch, "authorization: { token: " + f'"{SECRET}"' + " }") as server:
        await _gets_in(_settings(settings, test_queue(server.url, prefix, token=SECRET)))

        wrong = test_queue(server.url, prefix, token=SecretStr("h-other-token"))
        await _is_refused(_settings(settings, wrong), capsys)


async def test_creds_file_of_an_operator_account(
    scratch: Path, settings: Settings, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    operator = operator_mode()
    creds = scratch / "user.creds"
    creds.write_text(operator.creds, encoding="utf-8")
    with nats_server(scratch, operator.config) as server:
        await _gets_in(_settings(settings, test_queue(server.url, prefix, creds_file=creds)))

        await _is_refused(_settings(settings, test_queue(server.url, prefix)), capsys)


async def test_mutual_tls(
    scratch: Path, settings: Settings, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = certificates(scratch / "certs")
    tls = "\n".join(
        [
            "tls: {",
            f'  cert_file: "{certs.server_cert}"',
            f'  key_file: "{certs.server_key}"',
            f'  ca_file: "{certs.ca}"',
            "  verify: true",
            "}",
        ]
    )
    with nats_server(scratch, tls) as server:
        trusted = test_queue(
            server.url,
            prefix,
            tls_ca_file=certs.ca,
            tls_cert_file=certs.client_cert,
            tls_key_file=certs.client_key,
        )
        await _gets_in(_settings(settings, trusted))

        # The server verifies clients: trusting it is not enough without a certificate.
        anonymous = test_queue(server.url, prefix, tls_ca_file=certs.ca)
        await _is_refused(_settings(settings, anonymous), capsys)
