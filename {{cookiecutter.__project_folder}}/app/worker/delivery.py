"""One delivery of a task to this worker, from receipt to its settlement in NATS.

A delivery is settled exactly once, whatever happens to its handling:

- the task returned and its unit of work committed: ack;
- the task raised, timed out, or its commit failed: NAK with an exponential delay, and on the
  last attempt a copy in the dead letters, then TERM;
- the handling was cancelled (worker shutdown): NAK at once, so another worker takes it.

taskiq calls ``settle`` (as the message's ack) only when its handling ends normally; a failure
that escapes taskiq (a commit in a dependency's teardown) ends the asyncio task that handled the
message, and ``handler_done`` settles it then. The heartbeat that keeps the message from being
redelivered while the task runs stops when the delivery is settled, and at the task's timeout
at the latest: a hung delivery is redelivered after ``ack_wait``, never kept alive forever.
"""

import asyncio
from collections.abc import Awaitable, Callable

import nats.errors
import structlog
from nats.aio.msg import Msg

from app.worker.queue import QueueConfig

log = structlog.get_logger(__name__)

DeadLetter = Callable[[Msg, str, str], Awaitable[None]]


class Delivery:
    """A task message being handled here; ``settle`` is what taskiq calls as its ack."""

    def __init__(
        self,
        message: Msg,
        *,
        task_id: str,
        task_name: str,
        timeout: float,
        config: QueueConfig,
        dead_letter: DeadLetter,
        on_settled: Callable[["Delivery"], None],
    ) -> None:
        self.message = message
        self.task_id = task_id
        self.task_name = task_name
        self.attempt = message.metadata.num_delivered
        self.config = config
        self.error: str | None = None
        self.settled = False
        self._dead_letter = dead_letter
        self._on_settled = on_settled
        self._heartbeat = asyncio.create_task(self._keep_alive(limit=timeout))
        self._settling: asyncio.Task[None] | None = None

    @property
    def heartbeat_running(self) -> bool:
        return not self._heartbeat.done()

    def bind(self, handler: "asyncio.Task[object] | None") -> None:
        """Settle the delivery when ``handler`` (the asyncio task running it) ends, if taskiq
        did not."""
        if handler is not None:
            handler.add_done_callback(self.handler_done)

    def handler_done(self, handler: "asyncio.Task[object]") -> None:
        if self.settled:
            return
        if handler.cancelled():
            self._settling = asyncio.create_task(self._settle(interrupted=True))
            return
        exception = handler.exception()
        self.error = self.error or (
            f"{type(exception).__name__}: {exception}"
            if exception is not None
            else "the handling ended without a result"
        )
        log.error("task.handling_failed", task_id=self.task_id, error=self.error)
        self._settling = asyncio.create_task(self._settle())

    async def settle(self) -> None:
        """Ack, retry later, or dead-letter, by the outcome recorded in ``error``."""
        await self._settle()

    async def _settle(self, *, interrupted: bool = False) -> None:
        if self.settled:
            return
        self.settled = True
        self._heartbeat.cancel()
        self._on_settled(self)
        try:
            await self._tell_nats(interrupted=interrupted)
        except nats.errors.Error as exc:
            # NATS delivers it again after ack_wait: late, never lost.
            log.warning("task.settle_failed", task_id=self.task_id, error=repr(exc))

    async def _tell_nats(self, *, interrupted: bool) -> None:
        if interrupted:
            log.warning("task.interrupted", task_id=self.task_id, task_name=self.task_name)
            await self.message.nak()
            return
        if self.error is None:
            await self.message.ack()
            return
        if self.attempt < self.config.max_deliver:
            delay = self.config.retry_delay_after(self.attempt)
            log.warning(
                "task.retry_scheduled",
                task_id=self.task_id,
                task_name=self.task_name,
                attempt=self.attempt,
                delay=delay,
                error=self.error,
            )
            await self.message.nak(delay=delay)
            return
        await self._dead_letter(self.message, "failed", self.error)

    def cancel(self) -> None:
        """Stop the heartbeat of a delivery this process gives up (shutdown)."""
        self._heartbeat.cancel()

    async def _keep_alive(self, *, limit: float) -> None:
        """Tell NATS the task still runs, well within each ``ack_wait``, until its timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(self.config.ack_wait / 3, left))
            if loop.time() >= deadline:
                break
            try:
                await self.message.in_progress()
            except nats.errors.Error as exc:
                log.warning("task.heartbeat_failed", task_id=self.task_id, error=repr(exc))
        log.warning(
            "task.heartbeat_stopped", task_id=self.task_id, task_name=self.task_name, after=limit
        )
