"""The one place that knows APScheduler: timed jobs on the gateway's event loop."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)


class Scheduler:
    """Run functions on an interval or a cron rule; plain functions run in worker threads."""

    def __init__(self, timezone: str = "Europe/Paris"):
        self.timezone = timezone
        # Whether this gateway may act (the active node of a pair; always, alone): a duty job
        # (alarms, KPIs, lighting, e-mails…) runs only then, so a standby never acts twice.
        self.acting: Callable[[], bool] = lambda: True
        self._sched = AsyncIOScheduler(
            timezone=timezone,
            # A job that overran or missed its time runs once, not once per missed slot.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        )

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Start running jobs; stop when the stack closes."""
        self._sched.start()
        stack.callback(self._shutdown)

    def _shutdown(self) -> None:
        if self._sched.running:
            self._sched.shutdown(wait=False)

    def _gated(self, func: Callable[..., Any], duty: bool) -> Callable[..., Any]:
        """Return func, or (a duty) func skipped whenever this gateway may not act."""
        if not duty:
            return func
        if inspect.iscoroutinefunction(func):

            async def duty_async(*args: Any, **kwargs: Any) -> Any:
                if self.acting():
                    return await func(*args, **kwargs)
                return None

            return functools.update_wrapper(duty_async, func)

        def duty_sync(*args: Any, **kwargs: Any) -> Any:  # still run in a worker thread
            if self.acting():
                return func(*args, **kwargs)
            return None

        return functools.update_wrapper(duty_sync, func)

    def every(
        self,
        seconds: float,
        func: Callable[..., Any],
        name: str,
        *,
        duty: bool = False,
        **kwargs: Any,
    ) -> None:
        """Run func every `seconds` (a duty: only while this gateway may act)."""
        self._sched.add_job(
            self._gated(func, duty),
            IntervalTrigger(seconds=seconds),
            id=name,
            name=name,
            kwargs=kwargs,
            replace_existing=True,
        )

    def cron(
        self, func: Callable[..., Any], name: str, *, duty: bool = False, **fields: Any
    ) -> None:
        """Run func on a cron rule in the scheduler's time zone (a duty: only while acting)."""
        self._sched.add_job(
            self._gated(func, duty),
            CronTrigger(timezone=self.timezone, **fields),
            id=name,
            name=name,
            replace_existing=True,
        )

    def jobs(self) -> list[dict[str, Any]]:
        """Return the scheduled jobs and their next run times."""
        return [
            {"name": j.name, "next_run": j.next_run_time.isoformat() if j.next_run_time else None}
            for j in self._sched.get_jobs()
        ]
