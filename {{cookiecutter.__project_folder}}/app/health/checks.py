"""Readiness checks: each one proves that a backing service answers right now."""

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Set

import structlog

log = structlog.get_logger(__name__)

Check = Callable[[], Awaitable[None]]


class ReadinessProbe:
    """Runs named checks concurrently, each under a timeout, and reports which ones failed.

    The ``required`` ones decide readiness; the others only make the service degraded.
    """

    def __init__(
        self, checks: Mapping[str, Check], timeout: float, required: Set[str] | None = None
    ) -> None:
        self.checks = dict(checks)
        self.timeout = timeout
        self.required = frozenset(self.checks if required is None else required)

    async def _run_one(self, name: str, check: Check) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                await check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", logged below
            log.warning("health.check_failed", check=name, error=repr(exc))
            return False
        return True

    async def run(self) -> dict[str, bool]:
        """Return each check's name with whether it passed."""
        names = list(self.checks)
        results = await asyncio.gather(*(self._run_one(name, self.checks[name]) for name in names))
        return dict(zip(names, results, strict=True))
