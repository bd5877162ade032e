"""Log rendering: JSON lines off a terminal, the console renderer on one, with the bound
request id and a record's extra fields as keys either way."""

from __future__ import annotations

import io
import json
import logging

import structlog

from adapters.observability.logs import log_handler


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def logged(stream: io.StringIO) -> str:
    logger = logging.getLogger("tests.logs")
    logger.propagate = False
    logger.handlers = [log_handler(stream)]
    logger.setLevel(logging.INFO)
    with structlog.contextvars.bound_contextvars(request_id="req-1"):
        logger.info("paid %s", "in full", extra={"provider": "coinpay"})
    return stream.getvalue()


def test_off_a_terminal_each_line_is_json_with_the_request_id_and_extra_fields():
    (line,) = logged(io.StringIO()).splitlines()
    record = json.loads(line)
    assert ("paid in full", "req-1", "coinpay", "info", "tests.logs") == (
        record["event"],
        record["request_id"],
        record["provider"],
        record["level"],
        record["logger"],
    )
    assert record["timestamp"].endswith("Z")


def test_on_a_terminal_lines_are_rendered_for_people():
    text = logged(Terminal())
    assert "paid in full" in text
    assert "request_id" in text
    assert not text.lstrip().startswith("{")
