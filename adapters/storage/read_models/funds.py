"""Available funds at a provider, as the journal says, for the withdrawal check.

A withdrawal may only reserve funds that are available. Checking a projection that lags would let
two requests spend the same funds, so the check runs under a per-(provider, currency) advisory
lock: it first has every delivery received so far applied (a deposit answered 200 before the
request counts), catches the journal up to the log's head, reads `available`, and the caller
records its reservation before the lock is released. The next request in line then sees it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal

import asyncpg

from adapters.storage.read_models.readers import available_funds
from adapters.storage.read_models.runner import ProjectionRunner
from ledger.errors import InsufficientFunds

JOURNAL = "journal"


def _lock_key(provider: str, currency: str) -> int:
    digest = hashlib.sha256(f"funds:{provider}:{currency}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class JournalFundsGuard:
    def __init__(
        self,
        pool: asyncpg.Pool,
        runner: ProjectionRunner,
        apply_received: Callable[[], Awaitable[object]],
    ) -> None:
        self.pool = pool
        self.runner = runner
        # The delivery applier's catch-up (passed in: storage does not know ingestion).
        self.apply_received = apply_received
        # Requests of this process for the same funds queue here, not on pooled connections:
        # twenty of them each holding a connection while waiting for the advisory lock would
        # leave the holder none to catch the journal up with, and all would wait forever.
        self._queues: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    @asynccontextmanager
    async def reserving(self, provider: str, currency: str, amount: Decimal) -> AsyncIterator[None]:
        """Raises InsufficientFunds unless `amount` is available; holds the lock for the block."""
        async with self._queues[_lock_key(provider, currency)], self.pool.acquire() as connection:
            key = _lock_key(provider, currency)
            await connection.execute("SELECT pg_advisory_lock($1)", key)
            try:
                await self.apply_received()
                await self.runner.catch_up([JOURNAL])
                available = await available_funds(connection, provider, currency)
                if available < amount:
                    raise InsufficientFunds(
                        f"{amount} {currency} requested at {provider}, {available} available"
                    )
                yield
            finally:
                await connection.execute("SELECT pg_advisory_unlock($1)", key)
