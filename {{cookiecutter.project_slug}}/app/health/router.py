"""``/health/live`` says the process runs; ``/health/ready`` says it can serve traffic."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from app.core.errors import ServiceUnavailable, error_responses
from app.health.checks import ReadinessProbe

router = APIRouter(prefix="/health", tags=["health"])


class Health(BaseModel):
    """The state of the service and of each backing service it checked."""

    status: Literal["ok"] = "ok"
    checks: dict[str, Literal["ok"]] = Field(
        default_factory=dict, examples=[{"database": "ok", "nats": "ok"}]
    )


class NotReady(ServiceUnavailable):
    code = "not_ready"
    title = "Service not ready"


def get_readiness_probe(request: Request) -> ReadinessProbe:
    """The probe built by the lifespan, from the application's state."""
    probe = request.app.state.readiness
    if not isinstance(probe, ReadinessProbe):
        msg = "the lifespan did not set app.state.readiness"
        raise TypeError(msg)
    return probe


ReadinessProbeDep = Annotated[ReadinessProbe, Depends(get_readiness_probe)]


@router.get("/live", summary="Liveness")
async def live() -> Health:
    """Answer while the process runs; checks nothing else."""
    return Health()


@router.get("/ready", summary="Readiness", responses=error_responses(NotReady))
async def ready(probe: ReadinessProbeDep) -> Health:
    """Check every backing service; 503 names the ones that do not answer."""
    results = await probe.run()
    down = sorted(name for name, passed in results.items() if not passed)
    if down:
        raise NotReady(f"Not answering: {', '.join(down)}")
    return Health(checks=dict.fromkeys(results, "ok"))
