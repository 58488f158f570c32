"""Reading what the lifespan put on the application's state."""

import pytest
from fastapi import FastAPI, Request

from app.core.state import app_state


def request_for(app: FastAPI) -> Request:
    return Request({"type": "http", "app": app})


def test_returns_the_value_of_the_expected_type() -> None:
    app = FastAPI()
    app.state.answer = 42

    assert app_state(request_for(app), "answer", int) == 42


@pytest.mark.parametrize("value", [None, "42"])
def test_a_missing_or_wrong_value_is_named(value: object) -> None:
    app = FastAPI()
    if value is not None:
        app.state.answer = value

    with pytest.raises(TypeError, match=r"did not set app\.state\.answer"):
        app_state(request_for(app), "answer", int)
