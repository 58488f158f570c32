import structlog
from taskiq import TaskiqMessage

from app.core.context import request_id_var
from app.worker.middleware import TaskContextMiddleware, context_labels


def test_every_id_label_becomes_log_context() -> None:
    labels = {"request_id": "r1", "order_id": 7, "timeout": 30, "customer": "c", "task_id": "x"}

    assert context_labels(labels) == {"request_id": "r1", "order_id": "7"}


def test_a_task_binds_its_ids_and_the_request_id() -> None:
    message = TaskiqMessage(
        task_id="t1",
        task_name="tests.sample",
        labels={"request_id": "req-1", "invoice_id": "42", "timeout": "5"},
        args=[],
        kwargs={},
    )
    structlog.contextvars.clear_contextvars()
    token = request_id_var.set(None)
    try:
        TaskContextMiddleware().pre_execute(message)

        bound = structlog.contextvars.get_contextvars()
        assert bound == {
            "task_id": "t1",
            "task_name": "tests.sample",
            "request_id": "req-1",
            "invoice_id": "42",
        }
        assert request_id_var.get() == "req-1"
    finally:
        request_id_var.reset(token)
        structlog.contextvars.clear_contextvars()
