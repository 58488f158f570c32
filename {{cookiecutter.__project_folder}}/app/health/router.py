"""``/health/live`` says the process runs; ``/health/ready`` says it can serve traffic."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from app.core.errors import ServiceUnavailable, error_responses
from app.core.state import app_state
from app.health.checks import ReadinessProbe

router = APIRouter(prefix="/health", tags=["health"])


class Health(BaseModel):
    """The state of the service and of each backing service it checked.

    ``degraded``: the service works, but a backing service it can do without for a while is
    down (NATS: tasks wait in the outbox and are published when it is back).
    """

    status: Literal["ok", "degraded"] = "ok"
    checks: dict[str, Literal["ok", "down"]] = Field(
        default_factory=dict, examples=[{"database": "ok", "nats": "ok"}]
    )


class NotReady(ServiceUnavailable):
    code = "not_ready"
    title = "Service not ready"


async def get_readiness_probe(request: Request) -> ReadinessProbe:
    """The probe built by the lifespan, from the application's state."""
    return app_state(request, "readiness", ReadinessProbe)


ReadinessProbeDep = Annotated[ReadinessProbe, Depends(get_readiness_probe)]


@router.get("/live", summary="Liveness")
async def check_liveness() -> Health:
    """Answer while the process runs; checks nothing else."""
    return Health()


@router.get("/ready", summary="Readiness", responses=error_responses(NotReady))
async def check_readiness(probe: ReadinessProbeDep) -> Health:
    """Check every backing service: 503 names the required ones that do not answer (the
    database); a down NATS only makes the answer ``degraded`` (still 200)."""
    results = await probe.run()
    unready = sorted(
        name for name, passed in results.items() if not passed and name in probe.required
    )
    if unready:
        raise NotReady(f"Not answering: {', '.join(unready)}")
    checks: dict[str, Literal["ok", "down"]] = {
        name: "ok" if passed else "down" for name, passed in results.items()
    }
    return Health(status="ok" if all(results.values()) else "degraded", checks=checks)
