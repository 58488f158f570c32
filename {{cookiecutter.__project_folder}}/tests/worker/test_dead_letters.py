"""``just dead-letters``: list, replay and purge against the real dead-letter stream on NATS."""

import asyncio
import io
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import nats.errors
import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from taskiq import TaskiqMessage

from app.settings import Settings, get_settings
from app.worker.broker import JetStreamBroker
from app.worker.dead_letters import DeadLetters, human_age, main
from devtools.embedded import free_port
from tests.worker import sample_tasks

# Unique Nats-Msg-Ids for the dead letters the tests write (the broker uses task-stream sequences).
_origin = itertools.count(1)


@dataclass(frozen=True)
class Written:
    """A dead letter a test wrote: its ID and what a replay must queue again."""

    id: int
    body: bytes
    labels: dict[str, str]


async def dead_letter(
    broker: JetStreamBroker,
    *,
    task_name: str = "orders.process",
    reason: str = "failed",
    error: str = "ValueError: boom",
    deliveries: int = 3,
    body: bytes | None = None,
) -> Written:
    """Write a dead letter as ``JetStreamBroker.dead_letter`` does: the task's headers (its labels,
    as ``kick`` publishes them), the Dead-Letter-* notes, and the id of its task-stream message."""
    order_id = str(uuid.uuid4())
    message = TaskiqMessage(
        task_id=uuid.uuid4().hex,
        task_name=task_name,
        labels={"order_id": order_id, "request_id": "req-1"},
        args=[order_id],
        kwargs={},
    )
    published = broker.formatter.dumps(message)
    labels = {key: str(value) for key, value in published.labels.items()}
    headers = {
        **labels,
        "Dead-Letter-Reason": reason,
        "Dead-Letter-Error": error,
        "Dead-Letter-Deliveries": str(deliveries),
        "Nats-Msg-Id": f"{broker.config.stream}:{next(_origin)}",
    }
    data = published.message if body is None else body
    ack = await broker.jetstream.publish(broker.config.dead_letter_subject, data, headers=headers)
    return Written(ack.seq, data, labels)


async def stored(
    jetstream: JetStreamContext, stream: str
) -> dict[int, tuple[dict[str, str], bytes]]:
    """Every message in a stream, by sequence, with its headers."""
    info = await jetstream.stream_info(stream)
    found: dict[int, tuple[dict[str, str], bytes]] = {}
    if not info.state.messages:
        return found
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            message = await jetstream.get_msg(stream, sequence)
        except NotFoundError:  # deleted
            continue
        found[sequence] = (dict(message.headers or {}), message.data or b"")
    return found


async def queued(broker: JetStreamBroker) -> list[tuple[dict[str, str], bytes]]:
    """The tasks waiting in the work-queue stream."""
    return list((await stored(broker.jetstream, broker.config.stream)).values())


async def remaining(broker: JetStreamBroker) -> list[int]:
    """The IDs of the dead letters still there."""
    return list(await stored(broker.jetstream, broker.config.dead_letter_stream))


async def cli(settings: Settings | None, *argv: str) -> int:
    """``main`` as ``python -m`` runs it, with an event loop of its own (in a thread)."""
    return await asyncio.to_thread(main, list(argv), settings=settings)


class Terminal(io.StringIO):
    """Standard input from an operator at a terminal."""

    def isatty(self) -> bool:
        return True


async def test_list_shows_a_row_per_dead_letter(
    producer: JetStreamBroker, fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    long_error = "RuntimeError: " + "x" * 200
    failed = await dead_letter(producer, error=long_error, deliveries=3)
    unknown = await dead_letter(producer, task_name="orders.gone", reason="unknown_task")
    unreadable = await dead_letter(
        producer, reason="unreadable", error="JSONDecodeError: bad", deliveries=1, body=b"\xff"
    )

    assert await cli(fresh_queue, "list") == 0

    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "TASK", "REASON", "DELIVERIES", "AGE", "ERROR"]
    assert [row.split()[:4] for row in rows] == [
        [str(failed.id), "orders.process", "failed", "3"],
        [str(unknown.id), "orders.gone", "unknown_task", "3"],
        [str(unreadable.id), "?", "unreadable", "1"],
    ]
    assert all(row.split()[4].endswith("s") for row in rows), "ages of a few seconds"
    assert long_error not in rows[0], "the table shortens long errors"
    assert rows[0].endswith("...")


async def test_list_json_gives_every_field(
    producer: JetStreamBroker, fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    long_error = "RuntimeError: " + "x" * 200
    written = await dead_letter(producer, error=long_error, deliveries=5)
    await dead_letter(producer, reason="unreadable", body=b"not json")

    assert await cli(fresh_queue, "list", "--json") == 0

    readable, unreadable = json.loads(capsys.readouterr().out)
    assert readable["id"] == written.id
    assert readable["task_name"] == "orders.process"
    assert readable["task_id"] == json.loads(written.body)["task_id"]
    assert (readable["reason"], readable["error"]) == ("failed", long_error)
    assert readable["deliveries"] == 5
    assert readable["replayable"] is True
    assert readable["headers"] == written.labels
    assert 0 <= readable["age_seconds"] < 60
    assert (unreadable["task_name"], unreadable["replayable"]) == (None, False)


async def test_list_without_dead_letter_stream_says_so_and_creates_nothing(
    fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(fresh_queue, "list") == 0
    assert capsys.readouterr().out == "No dead letters.\n"

    assert await cli(fresh_queue, "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []

    client = await nats.connect(fresh_queue.nats.url)
    try:
        with pytest.raises(NotFoundError):
            await client.jetstream().stream_info(f"{fresh_queue.queue_prefix}_dead_letter")
    finally:
        await client.close()


async def test_replay_moves_exactly_that_task_back_to_the_work_queue(
    producer: JetStreamBroker, fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await dead_letter(producer)
    chosen = await dead_letter(producer, task_name="orders.ship")
    last = await dead_letter(producer)

    assert await cli(fresh_queue, "replay", str(chosen.id)) == 0

    [(headers, body)] = await queued(producer)
    assert body == chosen.body
    assert headers == {**chosen.labels, "Nats-Msg-Id": headers["Nats-Msg-Id"]}
    assert headers["Nats-Msg-Id"].startswith(f"replay:{chosen.id}:")
    assert await remaining(producer) == [first.id, last.id]
    assert f"Replayed {chosen.id}: orders.ship" in capsys.readouterr().out


async def test_replaying_the_same_dead_letter_again_queues_it_once(
    producer: JetStreamBroker, fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    written = await dead_letter(producer)

    async def lost_reply(*_args: object, **_kwargs: object) -> bool:
        raise nats.errors.TimeoutError

    # The first replay publishes, then its delete fails (as if the process died in between).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(JetStreamContext, "delete_msg", lost_reply)
        assert await cli(fresh_queue, "replay", str(written.id)) == 1
    assert await remaining(producer) == [written.id], "kept until the delete succeeds"

    assert await cli(fresh_queue, "replay", str(written.id)) == 0

    assert [body for _, body in await queued(producer)] == [written.body]
    assert await remaining(producer) == []
    assert "already queued by an earlier replay" in capsys.readouterr().out


async def test_dead_letter_is_kept_when_the_replay_cannot_be_published(
    producer: JetStreamBroker, fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    written = await dead_letter(producer)

    async def no_reply(*_args: object, **_kwargs: object) -> None:
        raise nats.errors.TimeoutError

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(JetStreamContext, "publish", no_reply)
        assert await cli(fresh_queue, "replay", str(written.id)) == 1

    assert await remaining(producer) == [written.id]
    assert await queued(producer) == []
    assert "nats: timeout" in capsys.readouterr().err


async def test_concurrent_replays_of_one_dead_letter_queue_it_once(
    producer: JetStreamBroker,
) -> None:
    written = await dead_letter(producer)
    letters = DeadLetters(producer.jetstream, producer.config)
    letter = await letters.get(written.id)
    assert letter is not None

    repeated = await asyncio.gather(letters.replay(letter), letters.replay(letter))

    assert sorted(repeated) == [False, True]
    assert [body for _, body in await queued(producer)] == [written.body]
    assert await remaining(producer) == []


async def test_replay_all_queues_every_readable_dead_letter_and_keeps_the_unreadable(
    producer: JetStreamBroker, fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    one = await dead_letter(producer, task_name="orders.a")
    unreadable = await dead_letter(producer, reason="unreadable", body=b"\x00garbage")
    two = await dead_letter(producer, task_name="orders.b", reason="abandoned")

    assert await cli(fresh_queue, "replay", "--all") == 1

    assert [body for _, body in await queued(producer)] == [one.body, two.body]
    assert await remaining(producer) == [unreadable.id]
    output = capsys.readouterr()
    assert f"Replayed {one.id}: orders.a" in output.out
    assert f"Replayed {two.id}: orders.b" in output.out
    assert f"{unreadable.id}: not replayed" in output.err


async def test_replay_all_without_dead_letters_does_nothing(
    producer: JetStreamBroker, fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(fresh_queue, "replay", "--all") == 0

    assert capsys.readouterr().out == "No dead letters.\n"
    assert await queued(producer) == []


async def test_unreadable_dead_letter_is_not_replayed(
    producer: JetStreamBroker, fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    unreadable = await dead_letter(producer, reason="unreadable", body=b"{not json")

    assert await cli(fresh_queue, "replay", str(unreadable.id)) == 1

    assert await queued(producer) == []
    assert await remaining(producer) == [unreadable.id]
    assert f"{unreadable.id}: not replayed: no worker can read it" in capsys.readouterr().err


async def test_unknown_id_is_reported_and_the_others_replayed(
    producer: JetStreamBroker, fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    written = await dead_letter(producer)
    unknown = written.id + 100

    assert await cli(fresh_queue, "replay", str(unknown), str(written.id)) == 1

    assert [body for _, body in await queued(producer)] == [written.body]
    assert await remaining(producer) == []
    assert f"{unknown}: no such dead letter" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["replay"], ["replay", "1", "--all"], ["replay", "0"], ["purge", "one"], ["list", "1"], []],
)
def test_usage_errors_exit_with_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


async def test_purge_yes_empties_the_stream(
    producer: JetStreamBroker, fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(3):
        await dead_letter(producer)

    assert await cli(fresh_queue, "purge", "--yes") == 0

    assert await remaining(producer) == []
    assert capsys.readouterr().out == "Removed 3 dead letters.\n"


async def test_purge_without_yes_and_without_terminal_refuses(
    producer: JetStreamBroker,
    fresh_queue: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    written = [await dead_letter(producer), await dead_letter(producer)]
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))

    assert await cli(fresh_queue, "purge") == 1
    assert await cli(fresh_queue, "purge", str(written[0].id)) == 1

    assert await remaining(producer) == [letter.id for letter in written]
    assert "pass --yes" in capsys.readouterr().err


@pytest.mark.parametrize(("answer", "left"), [("y\n", 0), ("n\n", 2), ("\n", 2)])
async def test_purge_asks_the_operator_at_a_terminal(
    producer: JetStreamBroker,
    fresh_queue: Settings,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    left: int,
) -> None:
    await dead_letter(producer)
    await dead_letter(producer)
    monkeypatch.setattr("sys.stdin", Terminal(answer))

    code = await cli(fresh_queue, "purge")

    assert len(await remaining(producer)) == left
    assert code == (0 if left == 0 else 1)


async def test_purge_keeps_what_arrived_after_the_operator_looked(
    producer: JetStreamBroker,
) -> None:
    letters = DeadLetters(producer.jetstream, producer.config)
    seen = [await dead_letter(producer), await dead_letter(producer)]
    snapshot = await letters.snapshot()
    newer = await dead_letter(producer)

    await letters.purge(through=snapshot.last_sequence)

    assert snapshot.size == len(seen)
    assert await remaining(producer) == [newer.id]


async def test_purge_ids_removes_only_those(
    producer: JetStreamBroker, fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    first, kept, last = [await dead_letter(producer) for _ in range(3)]

    assert await cli(fresh_queue, "purge", "--yes", str(first.id), str(last.id)) == 0
    assert await remaining(producer) == [kept.id]
    assert capsys.readouterr().out == f"Removed {first.id}.\nRemoved {last.id}.\n"

    assert await cli(fresh_queue, "purge", "--yes", str(first.id)) == 1
    assert f"{first.id}: no such dead letter" in capsys.readouterr().err


@pytest.fixture
async def pulled(producer: JetStreamBroker) -> AsyncIterator[JetStreamContext.PullSubscription]:
    """A pull consumer on the test's task stream, as a worker has (without running tasks)."""
    config = producer.config
    subscription = await producer.jetstream.pull_subscribe(
        config.subject, durable=config.durable, stream=config.stream
    )
    yield subscription
    await subscription.unsubscribe()


async def test_task_dead_lettered_by_the_broker_is_listed_and_replayed(
    producer: JetStreamBroker,
    fresh_queue: Settings,
    pulled: JetStreamContext.PullSubscription,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sent = await sample_tasks.record.kiq("/nonexistent", "hello")
    [message] = await pulled.fetch(1, timeout=5)
    await producer.dead_letter(message, "failed", "ValueError: boom")
    [letter_id] = await remaining(producer)

    capsys.readouterr()  # the broker's log line

    assert await cli(fresh_queue, "list") == 0
    [row] = capsys.readouterr().out.splitlines()[1:]
    assert row.split()[:4] == [str(letter_id), "tests.record", "failed", "1"]

    assert await cli(fresh_queue, "replay", str(letter_id)) == 0

    [again] = await pulled.fetch(1, timeout=5)
    assert json.loads(again.data)["task_id"] == sent.task_id
    assert again.metadata.num_delivered == 1, "a fresh task: every attempt again"
    assert not any(key.startswith("Dead-Letter-") for key in again.headers or {})
    await again.ack()
    assert await remaining(producer) == []


async def test_cli_uses_the_service_settings(
    producer: JetStreamBroker,
    fresh_queue: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    written = await dead_letter(producer)
    monkeypatch.setenv("NATS_URL", fresh_queue.nats.url)
    monkeypatch.setenv("NATS_QUEUE_PREFIX", fresh_queue.queue_prefix)
    get_settings.cache_clear()
    try:
        assert await cli(None, "list", "--json") == 0
    finally:
        get_settings.cache_clear()

    assert [row["id"] for row in json.loads(capsys.readouterr().out)] == [written.id]


@pytest.mark.slow
async def test_unreachable_nats_is_reported(
    fresh_queue: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"nats://user:secret@127.0.0.1:{free_port()}"
    nowhere = fresh_queue.model_copy(
        update={"nats": fresh_queue.nats.model_copy(update={"url": url})}
    )

    assert await cli(nowhere, "list") == 1

    error = capsys.readouterr().err
    assert "cannot connect to NATS" in error
    assert "secret" not in error


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (5.9, "5s"),
        (59, "59s"),
        (180, "3m"),
        (3599, "59m"),
        (7200, "2h"),
        (4 * 86400, "4d"),
    ],
)
def test_ages_are_shown_in_the_largest_whole_unit(seconds: float, shown: str) -> None:
    assert human_age(seconds) == shown
