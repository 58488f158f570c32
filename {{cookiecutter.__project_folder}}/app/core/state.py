"""What the lifespan put on the application's state, read back with its type checked."""

from fastapi import Request


def app_state[T](request: Request, name: str, kind: type[T]) -> T:
    """``request.app.state.<name>``; a ``TypeError`` names it when the lifespan did not set it."""
    value = getattr(request.app.state, name, None)
    if not isinstance(value, kind):
        msg = f"the lifespan did not set app.state.{name}"
        raise TypeError(msg)
    return value
