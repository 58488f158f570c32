"""How every process of the service reaches NATS: its servers, credentials and TLS.

The broker (API, worker, scheduler), the worker's probe and the dead-letters command line all
connect through ``connect_options``, so a setting added to ``NatsSettings`` applies to each.
Secrets leave their ``SecretStr`` only here, into nats-py's options, never into a log line.
"""

import contextlib
import ssl
from typing import Any, TypedDict

from nats.aio.client import Client

from app.settings import NatsSettings


class ConnectOptions(TypedDict, total=False):
    """The options of ``nats.connect`` that the settings decide."""

    servers: list[str]
    connect_timeout: int
    user: str
    password: str
    token: str
    user_credentials: str
    nkeys_seed_str: str
    tls: ssl.SSLContext


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    """A client TLS context trusting ``tls_ca_file`` (or the system's CAs) and presenting the
    client certificate, when any TLS setting is given; ``None`` otherwise."""
    if settings.tls_ca_file is None and settings.tls_cert_file is None:
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=str(settings.tls_ca_file) if settings.tls_ca_file is not None else None,
    )
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def connect_options(settings: NatsSettings) -> ConnectOptions:
    """The servers, timeout, credentials and TLS context to connect with."""
    options = ConnectOptions(servers=settings.servers, connect_timeout=settings.connect_timeout)
    if settings.creds_file is not None:
        options["user_credentials"] = str(settings.creds_file)
    if settings.nkey_seed is not None:
        options["nkeys_seed_str"] = settings.nkey_seed.get_secret_value()
    if settings.user is not None and settings.password is not None:
        options["user"] = settings.user
        options["password"] = settings.password.get_secret_value()
    if settings.token is not None:
        options["token"] = settings.token.get_secret_value()
    if (context := tls_context(settings)) is not None:
        options["tls"] = context
    return options


async def connect(
    settings: NatsSettings,
    # Any: the rest of nats-py's keyword arguments (name, callbacks, reconnect limits), each of
    # its own type, passed through unchanged.
    **options: Any,
) -> Client:
    """A client connected as the settings say, with ``options`` (name, callbacks, reconnect
    limits) added. A client that failed to connect is closed: nats-py leaves the socket of a
    server that refused the credentials open."""
    client = Client()
    try:
        await client.connect(**connect_options(settings), **options)
    except BaseException:
        # The failure to connect is the error to report, not one of closing what is left.
        with contextlib.suppress(Exception):
            await client.close()
        raise
    return client
