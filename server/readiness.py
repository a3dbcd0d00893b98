"""Readiness: periodic checks turned into grpc.health.v1 statuses, per service.

* `""` (the whole server) is liveness: SERVING from start to shutdown, whatever the
  checks say, so an orchestrator restarts the process only when it is really stuck.
* Each API service is SERVING only while every check it depends on (SERVICE_CHECKS)
  passed its last run; `readiness` aggregates all checks, for load balancers and
  Kubernetes readiness probes that ask one name.
* A service is NOT_SERVING until its checks passed once; `start()` waits (bounded)
  for that first round, so the statuses are real by the time the server announces it
  is ready.
* Rate limits: each check runs at most once per its interval, one run at a time;
  a failing check is retried at the same pace (a broken engine is not hammered).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from grpc_health.v1 import health_pb2

from server.health import HealthServicer
from server.health_checks import SANDBOX, STORAGE, Check, CheckFailed
from server.metrics import Metrics

_log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: The aggregate readiness name: SERVING while every check passes.
READINESS_SERVICE = "readiness"
#: What each API service needs; a service not listed needs every check.
SERVICE_CHECKS: dict[str, tuple[str, ...]] = {
    "codemode.v1.SessionService": (SANDBOX,),
    "codemode.v1.DependencyService": (SANDBOX,),
    # Sandboxed code's skills.* and artifacts.* calls are answered from storage.
    "codemode.v1.ExecuteService": (SANDBOX, STORAGE),
    "codemode.v1.SkillStoreService": (STORAGE,),
    "codemode.v1.ArtifactService": (STORAGE,),
}


@dataclasses.dataclass
class CheckState:
    """The last result of one check; `passing` is None until it ran once."""

    passing: bool | None = None
    message: str = ""
    checked_at: float = 0.0  # time.time() of the last finished run


class Readiness:
    def __init__(self, health: HealthServicer, services: list[str], checks: list[tuple[Check, float]],
                 metrics: Metrics) -> None:
        """`checks`: (check, interval in seconds); a check with interval <= 0 is not run."""
        self._health = health
        self._services = [*services, READINESS_SERVICE]
        self._checks = [(check, interval) for check, interval in checks if interval > 0]
        self._metrics = metrics
        self.states: dict[str, CheckState] = {check.name: CheckState() for check, _ in self._checks}
        self._published: dict[str, int] = {}
        self._publishing = asyncio.Lock()  # two checks finishing together publish in order
        self._first_round: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopped = False

    def status_of(self, service: str) -> int:
        needed = SERVICE_CHECKS.get(service, tuple(self.states)) if service != READINESS_SERVICE else tuple(self.states)
        passing = all(self.states[name].passing for name in needed if name in self.states)
        return SERVING if passing else NOT_SERVING

    async def _publish(self) -> None:
        async with self._publishing:
            for service in self._services:
                if self._stopped:
                    return
                status = self.status_of(service)
                if self._published.get(service) != status:
                    self._published[service] = status
                    await self._health.set(service, status)

    async def start(self, first_round_timeout: float) -> None:
        """Liveness SERVING, then every check once (waiting at most `first_round_timeout`),
        then the periodic runs."""
        await self._health.set("", SERVING)
        await self._publish()  # NOT_SERVING until the checks passed
        loop = asyncio.get_running_loop()
        for check, interval in self._checks:
            self._first_round[check.name] = asyncio.Event()
            self._tasks.append(loop.create_task(self._loop(check, interval), name=f"readiness-{check.name}"))
        waits = [loop.create_task(event.wait()) for event in self._first_round.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=first_round_timeout)
            for task in pending:
                task.cancel()
            if pending:
                _log.warning("readiness: not every check finished within %.0fs of the start; "
                             "services stay NOT_SERVING until they pass", first_round_timeout)

    async def _loop(self, check: Check, interval: float) -> None:
        while True:
            await self._run(check)
            self._first_round[check.name].set()
            await asyncio.sleep(interval)

    async def _run(self, check: Check) -> None:
        state = self.states[check.name]
        try:
            await check.run()
        except asyncio.CancelledError:
            raise
        except CheckFailed as exc:
            passing, message = False, str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug in a check must read as "not ready", not kill the loop
            passing, message = False, f"{type(exc).__name__}: {exc}"
            _log.exception("readiness: the %s check raised", check.name)
        else:
            passing, message = True, ""
        before = state.passing
        state.passing, state.message, state.checked_at = passing, message, time.time()
        self._metrics.health_checked(check.name, passing)
        if passing and before is False:
            _log.info("readiness: the %s check passes again", check.name)
        elif not passing and before is not False:
            _log.warning("readiness: the %s check fails: %s", check.name, message)
        await self._publish()

    async def stop(self) -> None:
        """Stops the checks; statuses are left to the caller (shutdown sets NOT_SERVING)."""
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for check, _ in self._checks:
            with contextlib.suppress(Exception):
                await check.close()


__all__ = ["READINESS_SERVICE", "SERVICE_CHECKS", "CheckState", "Readiness"]
