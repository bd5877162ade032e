"""The audit endpoints: the streamed log export, the head, signed checkpoints, the public key."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

from aiohttp import web

from adapters.audit.checkpoints import Checkpointer
from adapters.audit.export import ExportRange, export_pages
from adapters.audit.signing import Signer, default_key_file
from adapters.config import Settings
from adapters.http.auth import authorize
from adapters.http.keys import CHECKPOINTER, STORE
from adapters.http.problems import ProblemError
from adapters.storage.postgres_store import PostgresEventStore
from ledger.audit_files import csv_lines
from ledger.audit_rows import jsonl_line_of, row_of

log = logging.getLogger(__name__)

CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
_EXPORT_PARAMETERS = frozenset({"after", "before", "stream", "format"})
_STREAM_ID_LENGTH_MAX = 200


def _bad(detail: str, status: int = 400) -> ProblemError:
    title = "Bad Request" if status == 400 else "Unprocessable Content"
    return ProblemError(status, "invalid-audit-parameter", title, detail)


def _position(query: Mapping[str, str], name: str, default: int | None) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise _bad(f"{name} must be a log position (a whole number from 0), not {text!r}")
    return int(text)


def export_parameters(query: Mapping[str, str]) -> tuple[ExportRange, str]:
    unknown = sorted(set(query) - _EXPORT_PARAMETERS)
    if unknown:
        raise _bad(f"unknown parameters {unknown}; known: {sorted(_EXPORT_PARAMETERS)}")
    output_format = query.get("format", "jsonl")
    if output_format not in CONTENT_TYPES:
        raise _bad(f"format must be jsonl or csv, not {output_format!r}")
    after = _position(query, "after", 0) or 0
    before = _position(query, "before", None)
    if before is not None and before <= after:
        raise _bad(f"before ({before}) must be above after ({after})", 422)
    stream = query.get("stream") or None
    if stream is not None and len(stream) > _STREAM_ID_LENGTH_MAX:
        raise _bad(f"stream is longer than {_STREAM_ID_LENGTH_MAX} characters")
    return ExportRange(after=after, before=before, stream=stream), output_format


async def export_events(request: web.Request) -> web.StreamResponse:
    """Written page by page as the log is read (chunked): the export is never held whole."""
    authorize(request, "audit:export")
    wanted, output_format = export_parameters(request.query)
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{CONTENT_TYPES[output_format]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="ledger-audit.{output_format}"',
        }
    )
    response.enable_chunked_encoding()
    async with request.app[STORE].pool.acquire() as connection:
        pages = export_pages(connection, wanted)
        async with contextlib.aclosing(pages):
            first = await anext(pages, None)  # a database outage still answers as a problem
            await response.prepare(request)
            if output_format == "csv":
                await response.write(csv_lines([], header=True).encode())
            try:
                page = first
                while page is not None:
                    if output_format == "csv":
                        text = csv_lines([row_of(event) for event in page], header=False)
                    else:
                        text = "".join(jsonl_line_of(event) for event in page)
                    await response.write(text.encode())
                    page = await anext(pages, None)
            except ConnectionResetError:
                log.info("audit export: the client went away part way")
                return response
            except Exception:
                # Headers are gone: the only honest signal left is to cut the connection, so
                # the client sees a chunked body without its end, never a short "complete" one.
                log.exception("audit export failed part way; closing the connection")
                if request.transport is not None:
                    request.transport.close()
                return response
    await response.write_eof()
    return response


async def audit_head(request: web.Request) -> web.Response:
    authorize(request, "audit:export")
    head = await request.app[STORE].head()
    return web.json_response(
        {"partition": head.partition, "position": head.position, "hash": head.hash.hex()}
    )


async def make_checkpoint(request: web.Request) -> web.Response:
    authorize(request, "admin")
    checkpoint = await request.app[CHECKPOINTER].make()
    return web.json_response(checkpoint.document(), status=201)


async def list_checkpoints(request: web.Request) -> web.Response:
    authorize(request, "audit:export")
    unknown = sorted(set(request.query) - {"after", "cursor"})
    if unknown:
        raise _bad(f"unknown parameters {unknown}; known: ['after', 'cursor']")
    after = _position(request.query, "after", 0) or 0
    cursor = _position(request.query, "cursor", 0) or 0
    page = await request.app[CHECKPOINTER].page(after=after, cursor=cursor)
    return web.json_response(
        {
            "items": [checkpoint.document() for checkpoint in page.items],
            "next_cursor": None if page.next_cursor is None else str(page.next_cursor),
        }
    )


async def public_key(request: web.Request) -> web.Response:
    authorize(request, "audit:export")
    key = request.app[CHECKPOINTER].signer.public_key()
    return web.json_response({"algorithm": "Ed25519", "key_id": key.key_id, "pem": key.pem})


def build_signer(settings: Settings) -> Signer:
    """The checkpoint signer: the configured key, else one kept (made once) in the data dir."""
    configured = settings.audit.signing_key_file
    signer = Signer(configured or default_key_file(settings.data_dir), create=configured is None)
    if configured is not None:
        signer.public_key()  # a configured key that cannot be read stops start-up, not a request
    return signer


def build_checkpointer(store: PostgresEventStore, signer: Signer) -> Checkpointer:
    return Checkpointer(store, signer)
