"""One way to retry work that lost an optimistic-concurrency race: read again and redo it.

A writer loses only to another commit on the same stream, so redoing the whole read-decide-append
is always safe. Waits are random (full jitter, doubling, capped) so that writers that lost
together do not reload and collide again at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ledger.errors import ConcurrencyConflict

Result = TypeVar("Result")

BACKOFF_FIRST_SECONDS = 0.01
BACKOFF_CAP_SECONDS = 0.25


async def retry_on_conflict(
    work: Callable[[], Awaitable[Result]], *, attempts: int, what: str
) -> Result:
    """`work()` until it does not raise ConcurrencyConflict; raises one after `attempts`."""
    for attempt in range(attempts):
        try:
            return await work()
        except ConcurrencyConflict:
            if attempt + 1 < attempts:
                ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2**attempt)
                await asyncio.sleep(random.uniform(0, ceiling))  # noqa: S311 - jitter, no secret
    raise ConcurrencyConflict(f"{what}: still conflicting after {attempts} attempts")
