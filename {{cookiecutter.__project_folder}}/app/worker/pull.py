"""Pull requests to a durable JetStream consumer, as many messages at a time as there is room for.

nats-py's ``PullSubscription.fetch`` does not suit a worker: ``fetch(1)`` costs a round trip per
task, and ``fetch(n)`` from an idle consumer lingers until all ``n`` arrived or the request
expired, holding the first task back for up to the whole pull timeout. This asks JetStream
directly (``$JS.API.CONSUMER.MSG.NEXT``), on an inbox of its own:

- ``pull(n)``: whatever is there now, up to ``n`` messages, in one round trip (``no_wait``);
- ``pull(1, wait=seconds)``: the next message, as soon as it is published, or none when the
  request expires (an idle worker).

JetStream ends a request that got fewer messages than it asked for with a status message (404
no messages, 408 expired); one outstanding request at a time, so a status ends that one. A
message that arrives after its request was given up (a reconnect, a cancelled pull) is kept and
returned by a later pull, never more than it asks for: a delivery is never dropped here.
"""

import asyncio
import json

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = structlog.get_logger(__name__)

# A status JetStream sends while a request stays open (idle heartbeat): no answer yet.
HEARTBEAT = "100"
# Statuses that just end a request: no messages (404), expired (408).
ENDED = frozenset({"404", "408"})
# How much longer than a request's own expiry a pull waits for JetStream's answer.
GRACE = 1.0


class PullRefusedError(nats.errors.Error):
    """JetStream refused the pull request (409: too many waiting requests, the consumer is
    gone, ...)."""


class Puller:
    """Pull requests of one consumer; ``start`` before the first pull, ``stop`` at the end."""

    def __init__(self, client: Client, *, stream: str, durable: str, timeout: float) -> None:
        self._client = client
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._timeout = timeout
        self._inbox = client.new_inbox()
        self._subscription: Subscription | None = None
        self._received: list[Msg] = []
        self._wanted = 0
        self._answered: asyncio.Future[str | None] | None = None

    async def start(self) -> None:
        self._subscription = await self._client.subscribe(self._inbox, cb=self._arrived)

    async def stop(self) -> list[Msg]:
        """Stop receiving; return the messages that arrived but were never pulled."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        left, self._received = self._received, []
        return left

    async def pull(self, batch: int, *, wait: float | None = None) -> list[Msg]:
        """Up to ``batch`` messages: those there now, or with ``wait``, the next one within
        ``wait`` seconds. Returns ``[]`` when there was none; raises ``nats.errors.Error``
        when the request could not be sent or JetStream refused it (the messages that came
        all the same are kept for the next pull)."""
        if len(self._received) < batch:
            if not self._client.is_connected:
                # nats-py would keep the request and send it on reconnect, long expired or
                # asking for more than there is room for by then.
                raise nats.errors.ConnectionReconnectingError
            request: dict[str, int | bool] = {"batch": batch - len(self._received)}
            if wait is None:
                request["no_wait"] = True
            else:
                request["expires"] = int(wait * 1e9)
            loop = asyncio.get_running_loop()
            self._wanted = batch
            self._answered = answered = loop.create_future()
            try:
                await self._client.publish(
                    self._subject, json.dumps(request).encode(), reply=self._inbox
                )
                # JetStream answers a no_wait request at once; a lingering one by its expiry.
                async with asyncio.timeout((wait or self._timeout) + GRACE):
                    status = await answered
            except TimeoutError:
                log.warning("queue.pull_unanswered", batch=batch, wait=wait)
            else:
                if status is not None and status not in ENDED:
                    msg = f"JetStream refused the pull request (status {status})"
                    raise PullRefusedError(msg)
            finally:
                self._answered = None
        taken, self._received = self._received[:batch], self._received[batch:]
        return taken

    async def _arrived(self, message: Msg) -> None:
        answered = self._answered
        if message.reply:  # a delivery: only those carry the subject their ack goes to
            self._received.append(message)
            full = len(self._received) >= self._wanted
            if full and answered is not None and not answered.done():
                answered.set_result(None)
            return
        status = (message.headers or {}).get("Status")
        if status == HEARTBEAT:
            return
        # A status ends the outstanding request; one that comes with none outstanding belongs
        # to a request given up earlier.
        if answered is not None and not answered.done():
            answered.set_result(status)
