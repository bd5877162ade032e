"""Work that lives as long as the service: the projection runner, the clock sweep and the balance
poll. Each runs as a task started and stopped with the app (aiohttp cleanup context); a task that
dies is logged and does not take the HTTP service with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from adapters.config import Settings
from adapters.http.queries import RUNNER
from adapters.providers.contract import ProviderAdapter
from adapters.services.balances import BalancePoller
from adapters.services.payments import PaymentService
from adapters.services.sweeper import ClockSweeper
from adapters.storage.postgres_store import PostgresEventStore

log = logging.getLogger(__name__)

SWEEPER = web.AppKey("clock_sweeper", ClockSweeper)
POLLER = web.AppKey("balance_poller", BalancePoller)


def add_background(
    app: web.Application,
    settings: Settings,
    store: PostgresEventStore,
    payments: PaymentService,
    adapters: dict[str, ProviderAdapter],
    clock: Callable[[], datetime],
) -> None:
    sweeper = ClockSweeper(
        store, payments, clock, timedelta(minutes=settings.withdrawal_stuck_after_minutes)
    )
    poller = BalancePoller(store, adapters, clock)
    app[SWEEPER] = sweeper
    app[POLLER] = poller

    async def background(app: web.Application) -> AsyncIterator[None]:
        work: list[Coroutine[Any, Any, None]] = []
        if settings.projections_in_process:
            work.append(app[RUNNER].run_forever())
        if settings.expiry_sweep_seconds > 0:
            work.append(sweeper.run_forever(settings.expiry_sweep_seconds))
        if settings.balance_poll_seconds > 0:
            work.append(poller.run_forever(settings.balance_poll_seconds))
        tasks = [asyncio.create_task(_logged(w)) for w in work]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(background)


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background work stopped")
