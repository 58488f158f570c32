"""The dead letters: list them, queue them again, remove them.

The broker keeps a task that will not be delivered again in ``<prefix>_dead_letter``, with why in
``Dead-Letter-*`` headers. ``python -m app.worker.dead_letters`` (``just dead-letters``) acts on
them with the service's own settings, so it finds the same queue:

- ``list [--json]``: one line per dead letter, oldest first;
- ``replay ID... | replay --all``: publish each task to the work queue again, then delete its dead
  letter; an unreadable one is reported and kept;
- ``purge [ID...] [--yes]``: delete all of them (or those), after a confirmation.

Exit codes: 0 done, 1 something was not done (standard error says what), 2 usage.
"""

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import Header, RawStreamMsg
from nats.js.errors import APIError, NotFoundError
from pydantic import ValidationError

from app.settings import Settings, get_settings
from app.worker.connection import connect
from app.worker.queue import QueueConfig

# The headers JetStreamBroker.dead_letter adds to the task's own.
HEADER_PREFIX = "Dead-Letter-"
REASON = f"{HEADER_PREFIX}Reason"
ERROR = f"{HEADER_PREFIX}Error"
DELIVERIES = f"{HEADER_PREFIX}Deliveries"
UNREADABLE = "unreadable"
MESSAGE_ID = Header.MSG_ID.value
# JetStream's own headers (the message id, expectations) belonged to the publish that carried them.
NATS_HEADER_PREFIX = "Nats-"

OK, FAILED, USAGE = 0, 1, 2
ERROR_WIDTH = 60
_AGE_UNITS = (("d", 24 * 3600), ("h", 3600), ("m", 60))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of the dead-letter stream."""

    sequence: int
    stored_at: datetime
    headers: Mapping[str, str]
    body: bytes
    # None when the body is not a taskiq message (the "unreadable" ones).
    task_name: str | None
    task_id: str | None

    @classmethod
    def from_stored(cls, stored: RawStreamMsg) -> "DeadLetter":
        """The dead letter in a message read from the stream."""
        if stored.seq is None or stored.time is None:
            msg = "JetStream returned a stored message without its sequence or time"
            raise RuntimeError(msg)
        body = stored.data or b""
        task_name, task_id = _task_identity(body)
        return cls(
            sequence=stored.seq,
            stored_at=stored.time,
            headers={str(key): str(value) for key, value in (stored.headers or {}).items()},
            body=body,
            task_name=task_name,
            task_id=task_id,
        )

    @property
    def reason(self) -> str:
        return self.headers.get(REASON, "?")

    @property
    def error(self) -> str:
        return self.headers.get(ERROR, "")

    @property
    def deliveries(self) -> int | None:
        value = self.headers.get(DELIVERIES, "")
        return int(value) if value.isdigit() else None

    @property
    def replayable(self) -> bool:
        """Whether a worker could read the task; one that could not would only come back here."""
        return self.reason != UNREADABLE and self.task_name is not None

    @property
    def task_headers(self) -> dict[str, str]:
        """The headers the task was published with (its labels), without the dead-letter notes."""
        prefixes = (HEADER_PREFIX, NATS_HEADER_PREFIX)
        return {key: value for key, value in self.headers.items() if not key.startswith(prefixes)}

    @property
    def replay_id(self) -> str:
        """The message id of this dead letter's replay.

        The task's own id would be dropped as a duplicate within the stream's duplicate window;
        this one is the same for every replay of this entry, so a replay repeated (a crash between
        the publish and the delete, two operators at once) is queued once. The storage time keeps
        apart the entries of a dead-letter stream that was deleted and created again.
        """
        return f"replay:{self.sequence}:{self.stored_at.timestamp():.6f}"

    def age(self, now: datetime) -> float:
        """Seconds since the task was dead-lettered."""
        return max((now - self.stored_at).total_seconds(), 0.0)


def _task_identity(body: bytes) -> tuple[str | None, str | None]:
    """The task name and id of a taskiq message body; ``None`` for what it does not have."""
    try:
        message = json.loads(body)
    except ValueError:  # not UTF-8 or not JSON: both are ValueErrors
        return None, None
    if not isinstance(message, dict):
        return None, None
    name, task_id = message.get("task_name"), message.get("task_id")
    return (
        name if isinstance(name, str) else None,
        task_id if isinstance(task_id, str) else None,
    )


class NotReplayable(Exception):
    """The dead letter holds nothing a worker could run."""


class Snapshot(NamedTuple):
    """How many dead letters there are, and the sequence of the newest."""

    size: int
    last_sequence: int


class DeadLetters:
    """The dead-letter stream of one queue, through a connected JetStream context."""

    def __init__(self, jetstream: JetStreamContext, config: QueueConfig) -> None:
        self.jetstream = jetstream
        self.config = config

    @property
    def stream(self) -> str:
        return self.config.dead_letter_stream

    async def all(self) -> list[DeadLetter]:
        """Every dead letter, oldest first; none when the stream does not exist yet."""
        letters: list[DeadLetter] = []
        sequence = 1
        while (letter := await self._first_from(sequence)) is not None:
            letters.append(letter)
            sequence = letter.sequence + 1
        return letters

    async def _first_from(self, sequence: int) -> DeadLetter | None:
        # "Next by subject" skips the gaps that deletes and purges leave in one request each.
        try:
            stored = await self.jetstream.get_msg(
                self.stream, seq=sequence, subject=self.config.dead_letter_subject, next=True
            )
        except NotFoundError:  # no stream yet, or nothing from this sequence on
            return None
        return DeadLetter.from_stored(stored)

    async def get(self, sequence: int) -> DeadLetter | None:
        """The dead letter with this sequence (its ID), if there is one."""
        try:
            stored = await self.jetstream.get_msg(self.stream, seq=sequence)
        except NotFoundError:
            return None
        return DeadLetter.from_stored(stored)

    async def replay(self, letter: DeadLetter) -> bool:
        """Queue the task again, then delete its dead letter; return whether JetStream already
        held this replay (a repeated one, queued once)."""
        if not letter.replayable:
            msg = f"dead letter {letter.sequence} is not a task a worker can read"
            raise NotReplayable(msg)
        ack = await self.jetstream.publish(
            self.config.subject,
            letter.body,
            timeout=self.config.publish_timeout,
            headers={**letter.task_headers, MESSAGE_ID: letter.replay_id},
        )
        # Only now that JetStream stored the task: a failure before this keeps the dead letter.
        await self.delete(letter.sequence)
        return bool(ack.duplicate)

    async def delete(self, sequence: int) -> bool:
        """Delete one dead letter; ``False`` when it was not there (any more)."""
        try:
            await self.jetstream.delete_msg(self.stream, sequence)
        except APIError:
            # "No such message" comes as 400, 404 or 500 depending on the server version and on
            # whether the sequence was ever used: look rather than parse.
            if await self.get(sequence) is None:
                return False
            raise
        return True

    async def snapshot(self) -> Snapshot:
        """The stream's size now; empty when it does not exist yet."""
        try:
            info = await self.jetstream.stream_info(self.stream)
        except NotFoundError:
            return Snapshot(0, 0)
        return Snapshot(info.state.messages, info.state.last_seq)

    async def purge(self, *, through: int) -> None:
        """Delete every dead letter up to sequence ``through``; newer ones (arrived since the
        operator looked) stay."""
        await self.jetstream.purge_stream(self.stream, seq=through + 1)


def human_age(seconds: float) -> str:
    """The largest whole unit: 5s, 3m, 2h, 4d."""
    for unit, size in _AGE_UNITS:
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


# The command line.

Command = Callable[[DeadLetters, argparse.Namespace], Awaitable[int]]


def _out(line: str) -> None:
    sys.stdout.write(f"{line}\n")


def _err(line: str) -> None:
    sys.stderr.write(f"{line}\n")


def _plural(count: int) -> str:
    return f"{count} dead letter{'' if count == 1 else 's'}"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else f"{text[: width - 3]}..."


def _table(letters: Sequence[DeadLetter], now: datetime) -> list[str]:
    """Aligned columns; the error, of any length, comes last."""
    rows = [("ID", "TASK", "REASON", "DELIVERIES", "AGE", "ERROR")]
    for letter in letters:
        deliveries = "?" if letter.deliveries is None else str(letter.deliveries)
        rows.append(
            (
                str(letter.sequence),
                letter.task_name or "?",
                letter.reason,
                deliveries,
                human_age(letter.age(now)),
                _shorten(letter.error, ERROR_WIDTH),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return [_line(row, widths) for row in rows]


def _line(row: Sequence[str], widths: Sequence[int]) -> str:
    padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
    return "  ".join([*padded, row[-1]]).rstrip()


def _as_json(letter: DeadLetter, now: datetime) -> dict[str, object]:
    return {
        "id": letter.sequence,
        "task_name": letter.task_name,
        "task_id": letter.task_id,
        "reason": letter.reason,
        "error": letter.error,
        "deliveries": letter.deliveries,
        "stored_at": letter.stored_at.isoformat(),
        "age_seconds": round(letter.age(now)),
        "replayable": letter.replayable,
        "headers": letter.task_headers,
    }


async def _list(letters: DeadLetters, args: argparse.Namespace) -> int:
    found = await letters.all()
    now = datetime.now(UTC)
    if args.json:
        _out(json.dumps([_as_json(letter, now) for letter in found], indent=2))
    elif not found:
        _out("No dead letters.")
    else:
        for line in _table(found, now):
            _out(line)
    return OK


async def _find(letters: DeadLetters, ids: Sequence[int]) -> tuple[list[DeadLetter], int]:
    """The dead letters with these IDs, and how many of the IDs have none (reported)."""
    found: list[DeadLetter] = []
    for sequence in dict.fromkeys(ids):
        letter = await letters.get(sequence)
        if letter is None:
            _err(f"{sequence}: no such dead letter")
        else:
            found.append(letter)
    return found, len(dict.fromkeys(ids)) - len(found)


async def _replay(letters: DeadLetters, args: argparse.Namespace) -> int:
    if args.all:
        targets, missing = await letters.all(), 0
        if not targets:
            _out("No dead letters.")
    else:
        targets, missing = await _find(letters, args.ids)
    skipped = 0
    for letter in targets:
        if not letter.replayable:
            _err(
                f"{letter.sequence}: not replayed: no worker can read it ({letter.reason}); "
                f"remove it with `purge {letter.sequence}`"
            )
            skipped += 1
            continue
        repeated = await letters.replay(letter)
        note = " (already queued by an earlier replay)" if repeated else ""
        _out(f"Replayed {letter.sequence}: {letter.task_name} (task {letter.task_id}){note}")
    return FAILED if missing or skipped else OK


def _ask(question: str) -> bool:
    # Blocking the loop is harmless here: the connection survives minutes without answering the
    # server's pings, and one that did not would fail the purge, which then removes nothing.
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in {"y", "yes"}


def _confirmed(question: str, *, yes: bool) -> bool:
    """``--yes``, or the operator's answer on a terminal; never a guess without one."""
    if yes:
        return True
    if not sys.stdin.isatty():
        _err("Nothing removed: there is no terminal to confirm on; pass --yes.")
        return False
    if not _ask(question):
        _err("Nothing removed.")
        return False
    return True


async def _purge(letters: DeadLetters, args: argparse.Namespace) -> int:
    if args.ids:
        return await _purge_some(letters, args.ids, yes=args.yes)
    snapshot = await letters.snapshot()
    if snapshot.size == 0:
        _out("No dead letters.")
        return OK
    question = f"Remove all {_plural(snapshot.size)} from {letters.stream}?"
    if not _confirmed(question, yes=args.yes):
        return FAILED
    # Up to what the operator saw: a task dead-lettered meanwhile is not removed unseen.
    await letters.purge(through=snapshot.last_sequence)
    _out(f"Removed {_plural(snapshot.size)}.")
    return OK


async def _purge_some(letters: DeadLetters, ids: Sequence[int], *, yes: bool) -> int:
    unique = list(dict.fromkeys(ids))
    question = f"Remove dead letters {', '.join(map(str, unique))} from {letters.stream}?"
    if not _confirmed(question, yes=yes):
        return FAILED
    missing = 0
    for sequence in unique:
        if await letters.delete(sequence):
            _out(f"Removed {sequence}.")
        else:
            _err(f"{sequence}: no such dead letter")
            missing += 1
    return FAILED if missing else OK


COMMANDS: dict[str, Command] = {"list": _list, "replay": _replay, "purge": _purge}


def _sequence(value: str) -> int:
    """A dead letter's ID: its sequence in the stream, from 1."""
    if not value.isdigit() or int(value) < 1:
        msg = f"not a dead letter ID: {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(value)


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command line's parser, and its ``replay`` parser (for the check argparse cannot do)."""
    parser = argparse.ArgumentParser(
        prog="dead-letters", description="Inspect and act on dead-lettered tasks."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="one line per dead letter, oldest first")
    listing.add_argument("--json", action="store_true", help="every field, as a JSON array")
    replay = commands.add_parser("replay", help="queue the tasks again, then delete them here")
    replay.add_argument("ids", nargs="*", type=_sequence, metavar="ID")
    replay.add_argument("--all", action="store_true", help="every dead letter")
    purge = commands.add_parser("purge", help="delete all dead letters (or the IDs given)")
    purge.add_argument("ids", nargs="*", type=_sequence, metavar="ID")
    purge.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    return parser, replay


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser, replay = _parser()
    args = parser.parse_args(argv)
    if args.command == "replay" and args.all == bool(args.ids):
        replay.error("give dead letter IDs or --all")
    return args


def _public(url: str) -> str:
    """The URL without its credentials, fit for a message."""
    return re.sub(r"//[^/@]*@", "//", url)


async def _connect(config: QueueConfig) -> Client:
    """A connection that gives up after one retry (nats-py's default retries for minutes)."""

    async def quiet(_error: Exception) -> None:
        """The failure that matters is reported once, by the caller (nats-py logs each one)."""

    return await connect(
        config.connection,
        name=f"{config.dead_letter_stream}-cli",
        allow_reconnect=False,
        max_reconnect_attempts=1,
        error_cb=quiet,
    )


async def _run(command: Command, args: argparse.Namespace, config: QueueConfig) -> int:
    try:
        client = await _connect(config)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        _err(f"cannot connect to NATS at {_public(config.url)}: {exc}")
        return FAILED
    try:
        return await command(DeadLetters(client.jetstream(), config), args)
    except nats.errors.Error as exc:  # a timeout, a lost connection, an error of the JetStream API
        _err(f"stopped: {exc}")
        return FAILED
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None, *, settings: Settings | None = None) -> int:
    """Run the command line (with the service's settings unless given); return the exit code."""
    try:
        args = _parse(argv)
    except SystemExit as exc:  # argparse exits after --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    try:
        config = QueueConfig.from_settings(settings or get_settings())
    except ValidationError as exc:
        _err(f"invalid settings: {exc}")
        return FAILED
    try:
        return asyncio.run(_run(COMMANDS[args.command], args, config))
    except KeyboardInterrupt:
        _err("Interrupted: what is reported above was done, nothing else.")
        return FAILED


if __name__ == "__main__":
    sys.exit(main())
