"""One delivery of a task to this worker, from receipt to its settlement in NATS.

A delivery is settled exactly once, whatever happens to its handling:

- the task returned and its unit of work committed: ack (sent with others a moment later,
  ``AckBatch``);
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
Ack = Callable[[Msg], Awaitable[None]]


class AckBatch:
    """Acks of finished tasks, sent together a moment later: one write to NATS for many.

    Each ack is a small message of its own, and tasks finish one after the other, so acked one
    by one each takes a write (and a wakeup of the server) of its own. An ack that waits here
    was earned (the task finished and committed); if the worker dies before it goes out, the
    task is delivered again after ``ack_wait``, as when it dies just before acking.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._waiting: list[Msg] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def ack(self, message: Msg) -> None:
        """Ack ``message`` with the next batch."""
        self._waiting.append(message)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._send_later)

    def _send_later(self) -> None:
        self._timer = None
        sending = asyncio.create_task(self.flush())
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def flush(self) -> None:
        """Send every waiting ack now (nats-py writes them out together)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, []
        for message in waiting:
            try:
                await message.ack()
            except nats.errors.Error as exc:
                # NATS delivers it again after ack_wait: late, never lost.
                log.warning("task.ack_failed", error=repr(exc))


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
        ack: Ack | None = None,
    ) -> None:
        self.message = message
        self.task_id = task_id
        self.task_name = task_name
        self.attempt = message.metadata.num_delivered
        self.config = config
        self.error: str | None = None
        self.settled = False
        self._dead_letter = dead_letter
        self._ack: Ack = ack or Msg.ack
        self._on_settled = on_settled
        self._settling: asyncio.Task[None] | None = None
        # The heartbeat is a timer, not a task: most tasks end long before their first beat, and
        # a timer costs nothing to cancel.
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + timeout
        self._limit = timeout
        self._beating: asyncio.Task[None] | None = None
        self._next_beat: asyncio.TimerHandle | None = None
        self._schedule_beat()

    @property
    def heartbeat_running(self) -> bool:
        beating = self._beating is not None and not self._beating.done()
        return self._next_beat is not None or beating

    def _schedule_beat(self) -> None:
        left = self._deadline - self._loop.time()
        self._next_beat = self._loop.call_later(min(self.config.ack_wait / 3, left), self._beat)

    def _beat(self) -> None:
        """Tell NATS the task still runs, well within each ``ack_wait``, until its timeout."""
        self._next_beat = None
        if self._loop.time() >= self._deadline:
            log.warning(
                "task.heartbeat_stopped",
                task_id=self.task_id,
                task_name=self.task_name,
                after=self._limit,
            )
            return
        self._beating = asyncio.create_task(self._in_progress())
        self._schedule_beat()

    async def _in_progress(self) -> None:
        if self.settled:  # settled since the beat: an ack or NAK went out instead
            return
        try:
            await self.message.in_progress()
        except nats.errors.Error as exc:
            log.warning("task.heartbeat_failed", task_id=self.task_id, error=repr(exc))

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
        self.cancel()
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
            await self._ack(self.message)
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

    async def release(self) -> None:
        """Give back a delivery taskiq never started (shutdown): NAK at once."""
        await self._settle(interrupted=True)

    def cancel(self) -> None:
        """Stop the heartbeat of a delivery this process gives up (shutdown)."""
        if self._next_beat is not None:
            self._next_beat.cancel()
            self._next_beat = None
