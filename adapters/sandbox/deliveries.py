"""Webhooks a sandbox sends: POSTed one after the other, each answer reported back.

A scenario (or a control such as Payment Engine's balances) says what to send as `Deliveries`;
the sandbox's `WebhookSender` signs each body the provider's way and posts it, without retries,
so a test sees exactly what the receiver answered to each.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping, Sequence


@dataclass(frozen=True, slots=True)
class Deliveries:
    """Webhook bodies (JSON text, in sending order) and where they go: `url`, or the callback
    URL set in the provider's portal when None."""

    bodies: Sequence[str]
    url: str | None = None
    note: str | None = None  # said to the caller beside the deliveries (e.g. a word missing)


def json_headers(_body: bytes) -> Mapping[str, str]:
    """The headers of a provider that signs nothing."""
    return {"Content-Type": "application/json"}


class WebhookSender:
    def __init__(self, sign: Callable[[bytes], Mapping[str, str]]) -> None:
        self._sign = sign
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, url: str | None, bodies: Sequence[str]) -> list[dict[str, Any]]:
        """Posts each body to `url` in turn: `{status, body}` per body, `{status: None, body,
        error}` where no answer came. Nothing is sent without a URL."""
        if url is None:
            return []
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        results: list[dict[str, Any]] = []
        for body in bodies:
            raw = body.encode("utf-8")
            try:
                async with self._session.post(url, data=raw, headers=self._sign(raw)) as answer:
                    await answer.read()
                    results.append({"status": answer.status, "body": body})
            except (aiohttp.ClientError, TimeoutError) as error:
                failure = f"{type(error).__name__}: {error}"
                results.append({"status": None, "body": body, "error": failure})
        return results

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs `work` (e.g. a testnet flow sending webhooks by itself) until it ends or the
        sandbox closes."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
