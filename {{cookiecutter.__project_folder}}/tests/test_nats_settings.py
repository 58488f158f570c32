"""The NATS cluster, credential and TLS settings: what they accept, refuse and hide."""

import ssl
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import NatsSettings, Settings, WorkerSettings
from app.worker.connection import connect_options
from app.worker.queue import QueueConfig
from tests.nats_servers import certificates, user_nkey

SEED, _ = user_nkey()
# Made per run: secrets are no literals of the code.
TOKEN, PASSWORD = uuid.uuid4().hex, uuid.uuid4().hex


def _nats(**fields: object) -> NatsSettings:
    """Settings from these values only (not from the environment)."""
    return NatsSettings.model_validate(fields)


def test_one_url_is_one_server_and_a_list_is_several() -> None:
    assert _nats(url="nats://127.0.0.1:4222").servers == ["nats://127.0.0.1:4222"]
    several = _nats(url="nats://a:4222, nats://b:4222 ,nats://c:4222")
    assert several.servers == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
    assert connect_options(several)["servers"] == several.servers


@pytest.mark.parametrize("url", ["", "nats://a:4222,", "nats://a:4222,,nats://b:4222"])
def test_an_empty_server_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="none of them empty"):
        _nats(url=url)


def test_the_defaults_of_the_cluster_limits() -> None:
    nats = _nats()
    assert (nats.stream_replicas, nats.max_ack_pending, nats.max_waiting) == (1, 1000, 512)
    config = QueueConfig.from_settings(Settings(nats=_nats(stream_replicas=3)))
    assert (config.stream_replicas, config.max_ack_pending, config.max_waiting) == (3, 1000, 512)


@pytest.mark.parametrize("replicas", [0, 6])
def test_stream_replicas_are_one_to_five(replicas: int) -> None:
    with pytest.raises(ValidationError, match="stream_replicas"):
        _nats(stream_replicas=replicas)


def test_max_ack_pending_below_one_workers_concurrency_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"NATS_MAX_ACK_PENDING \(4\) is less than .* \(5"):
        Settings(nats=_nats(max_ack_pending=4), worker=WorkerSettings(concurrency=5))
    Settings(nats=_nats(max_ack_pending=5), worker=WorkerSettings(concurrency=5))


def test_the_environment_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("NATS_STREAM_REPLICAS", "3")
    monkeypatch.setenv("NATS_MAX_ACK_PENDING", "2000")
    monkeypatch.setenv("NATS_MAX_WAITING", "64")
    monkeypatch.setenv("NATS_USER", "svc")
    monkeypatch.setenv("NATS_PASSWORD", "pw-from-env")
    monkeypatch.setenv("NATS_TOKEN", "")  # empty: unset, as in a .env file

    nats = NatsSettings()

    assert nats.servers == ["nats://a:4222", "nats://b:4222"]
    assert (nats.stream_replicas, nats.max_ack_pending, nats.max_waiting) == (3, 2000, 64)
    assert nats.token is None
    options = connect_options(nats)
    assert (options["user"], options["password"]) == ("svc", "pw-from-env")
    assert "pw-from-env" not in repr(nats)
    assert "pw-from-env" not in repr(QueueConfig.from_settings(Settings(nats=nats)))


def test_secrets_are_hidden_and_given_to_the_client_only() -> None:
    nats = _nats(nkey_seed=SEED)
    assert SEED not in repr(nats)
    assert SEED not in str(nats.model_dump())
    assert connect_options(nats)["nkeys_seed_str"] == SEED
    assert connect_options(_nats(token=TOKEN))["token"] == TOKEN


def test_a_malformed_nkey_seed_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError, match="starting with SU") as raised:
        _nats(nkey_seed="SAnot-a-user-seed")
    assert "not-a-user-seed" not in str(raised.value)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"nkey_seed": SEED, "token": "t"}, "NATS_NKEY_SEED and NATS_TOKEN"),
        ({"user": "u", "password": "p", "token": "t"}, "NATS_USER/NATS_PASSWORD and NATS_TOKEN"),
        ({"user": "u", "password": "p", "nkey_seed": SEED}, "NATS_NKEY_SEED and NATS_USER"),
        ({"url": "nats://u:p@a:4222", "token": "t"}, "NATS_TOKEN and credentials in NATS_URL"),
    ],
)
def test_credentials_given_two_ways_are_refused(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=named) as raised:
        _nats(**fields)
    assert "p@a" not in str(raised.value)


def test_a_creds_file_with_another_way_is_refused(tmp_path: Path) -> None:
    creds = tmp_path / "user.creds"
    creds.write_text("creds")
    assert connect_options(_nats(creds_file=creds))["user_credentials"] == str(creds)
    with pytest.raises(ValidationError, match="NATS_CREDS_FILE and NATS_USER/NATS_PASSWORD"):
        _nats(creds_file=creds, user="u", password=PASSWORD)
    with pytest.raises(ValidationError, match="creds_file"):
        _nats(creds_file=tmp_path / "missing.creds")


@pytest.mark.parametrize("fields", [{"user": "u"}, {"password": "p"}])
def test_user_and_password_go_together(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="NATS_USER and NATS_PASSWORD go together"):
        _nats(**fields)


def test_tls_files_make_a_context(tmp_path: Path) -> None:
    certs = certificates(tmp_path)
    assert "tls" not in connect_options(_nats())

    trusting = connect_options(_nats(tls_ca_file=certs.ca))["tls"]
    assert isinstance(trusting, ssl.SSLContext)
    assert trusting.verify_mode is ssl.CERT_REQUIRED
    assert trusting.check_hostname
    assert len(trusting.get_ca_certs()) == 1

    presenting = _nats(
        tls_ca_file=certs.ca, tls_cert_file=certs.client_cert, tls_key_file=certs.client_key
    )
    assert isinstance(connect_options(presenting)["tls"], ssl.SSLContext)


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    certs = certificates(tmp_path)
    with pytest.raises(ValidationError, match="NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE"):
        _nats(tls_cert_file=certs.client_cert)
    with pytest.raises(ValidationError, match="NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE"):
        _nats(tls_key_file=certs.client_key)
