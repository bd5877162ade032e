"""`ledger serve`: the ledger's HTTP service on the configured (or embedded) database, until
SIGINT or SIGTERM.

The ledger is composed by `init_app` (adapters/http/app.py), the one composition root: it opens
the database and the provider adapters itself when the app starts and closes them when it stops.
`ledger serve` and `ledger demo` both serve what `build_app` returns, so work added there runs in
both.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime

import click
from aiohttp import web

from adapters.cli.errors import ExitCode, UsageError
from adapters.cli.options import common_options, settings
from adapters.config import Settings
from adapters.http.app import init_app
from adapters.storage.postgres_store import PostgresEventStore

# In-flight requests get this long to finish at shutdown; a provider retries what was cut off.
SHUTDOWN_GRACE_SECONDS = 10.0
# Where `ledger serve` runs the projection runner unless the configuration says.
SERVE_PROJECTIONS_WORKER = "process"


def build_app(
    settings: Settings,
    store: PostgresEventStore | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
) -> web.Application:
    """The ledger as it runs: the HTTP app over the configured providers, on the configured (or
    embedded) database unless a caller that holds a store (the demo, the benches) passes it."""
    return init_app(settings, clock=clock, store=store)


def listening_socket(host: str, port: int) -> socket.socket:
    """Binds now, so the URL (and so `public_url`) is known before the app is built; port 0
    takes a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def socket_url(sock: socket.socket) -> str:
    """The base URL clients use to reach the socket; a wildcard address is reached on loopback."""
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - not binding
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def serving(app: web.Application, sock: socket.socket) -> AsyncIterator[None]:
    """Serves `app` on the bound socket for the block; on exit stops accepting, lets in-flight
    requests finish (up to the grace period) and runs the app's cleanup."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` instead of killing the process mid-request."""
    loop = asyncio.get_running_loop()
    handled = (signal.SIGINT, signal.SIGTERM)
    for number in handled:
        loop.add_signal_handler(number, stop.set)
    try:
        yield
    finally:
        for number in handled:
            loop.remove_signal_handler(number)


def describe_database(settings: Settings) -> str:
    if not settings.database_url:
        return "embedded PostgreSQL"
    # Host and database only: the URL may carry a password.
    location = settings.database_url.rsplit("@", 1)[-1]
    return f"PostgreSQL at {location}"


def bound_socket(host: str, port: int) -> socket.socket:
    """`listening_socket`, with an address that cannot be taken (in use, not ours) as one line:
    exit 2, since the fix is another --port/--host or `port` in the configuration."""
    try:
        return listening_socket(host, port)
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(f"cannot listen on {host}:{port}: {reason.lower()}") from error


async def run_service(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Runs the service until `stop` is set (by SIGINT/SIGTERM, or by the caller)."""
    stop = stop or asyncio.Event()
    with (
        stop_on_signals(stop),
        contextlib.closing(bound_socket(settings.host, settings.port)) as sock,
    ):
        url = socket_url(sock)
        if "public_url" not in settings.model_fields_set:
            # Unconfigured, the webhook URLs handed to providers point at where we listen.
            settings = settings.model_copy(update={"public_url": url})
        if "projections_worker" not in settings.model_fields_set:
            # Unconfigured, the runner gets a process of its own, so its batches never hold up
            # the HTTP server's loop and it can use a core the server leaves idle: measured with
            # bench/webhook_ingest.py, ingest with it on kept more of ingest with it off than
            # with the runner on the loop (0.62-0.82 against 0.52-0.72 on 2 busy cores).
            settings = settings.model_copy(update={"projections_worker": SERVE_PROJECTIONS_WORKER})
        async with serving(build_app(settings), sock):
            providers = ", ".join(sorted(settings.providers)) or "none configured"
            print(
                f"ledger serving on {url} ({describe_database(settings)}; providers: {providers})",
                flush=True,
            )
            await stop.wait()
            print("ledger stopping: finishing in-flight requests", flush=True)
    print("ledger stopped", flush=True)


async def _serve(settings: Settings) -> None:
    from adapters.cli.database import probe  # noqa: PLC0415 - importing the storage adapter

    # The address first (it costs nothing to give back), then the database, both in one line.
    bound_socket(settings.host, settings.port).close()
    await probe(settings)
    await run_service(settings)


@click.command("serve")
@click.option("--host", help="Address to listen on (default: the config's, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: the config's, 8080).")
@common_options
def serve_command(host: str | None, port: int | None) -> int:
    """Run the HTTP service (migrates the database first); SIGINT/SIGTERM stop it gracefully.
    An address already in use exits 2, a database that cannot be used exits 3."""
    listen = {"host": host, "port": port}
    overrides = {key: value for key, value in listen.items() if value is not None}
    asyncio.run(_serve(settings().model_copy(update=overrides)))
    return ExitCode.OK
