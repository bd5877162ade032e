"""Every log line rendered by structlog: JSON for machines, a readable console on a terminal.

The ledger's modules log through the stdlib (`logging.getLogger(__name__)`); structlog's
`ProcessorFormatter` renders those records, with the context bound by
`structlog.contextvars` (the request id, bound once per request by the HTTP middleware) and the
`extra=` fields of a record (the access log's method, route, status and duration) as keys.
Logging stays the stdlib's, so a library that logs is rendered the same way and nothing needs
structlog configured before it can log.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import Processor

ACCESS_LOGGER = "ledger.access"

_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def log_handler(stream: TextIO, *, json_lines: bool | None = None) -> logging.Handler:
    """A handler writing to `stream`: JSON lines, or the console renderer when `json_lines` is
    None and the stream is a terminal."""
    if json_lines is None:
        json_lines = not stream.isatty()
    rendering: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json_lines:
        rendering += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        rendering.append(structlog.dev.ConsoleRenderer())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=_SHARED, processors=rendering)
    )
    return handler


def configure_logging(
    *,
    level: int = logging.WARNING,
    access_log: bool = False,
    stream: TextIO | None = None,
    json_lines: bool | None = None,
) -> None:
    """Routes the root logger (and structlog's own loggers) through one structlog handler.

    `access_log` turns on one line per HTTP request whatever `level` is: a service wants it,
    a one-shot command (demo, migrate) would only be buried in it."""
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers = [log_handler(stream or sys.stderr, json_lines=json_lines)]
    root.setLevel(level)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if access_log else logging.WARNING)
    # aiohttp's own access log prints the raw request line, and a webhook path can carry the
    # provider's token (/v1/webhooks/{provider}/{token}): ours logs the route template instead.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
