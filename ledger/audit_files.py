"""Export files: CSV (RFC 4180) rows, and reading either format back.

JSON Lines is written and read in ledger/audit_rows.py; a CSV row carries the same fields, with
`payload` and `metadata` as JSON text cells, so both formats read back to equal rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from ledger.audit_rows import COLUMNS, AuditRow, RowUnreadable, document_of, read_jsonl, row_from


def csv_lines(rows: Iterable[AuditRow], *, header: bool) -> str:
    """RFC 4180 text (CRLF line ends, quotes doubled); payload and metadata as JSON text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header:
        writer.writerow(COLUMNS)
    for row in rows:
        cells = document_of(row)
        cells["payload"] = json.dumps(row.payload, ensure_ascii=False, separators=(",", ":"))
        cells["metadata"] = json.dumps(row.metadata, ensure_ascii=False, separators=(",", ":"))
        writer.writerow([cells[name] for name in COLUMNS])
    return buffer.getvalue()


def read_csv(lines: Iterable[str]) -> Iterator[AuditRow]:
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if header is None or tuple(header) != COLUMNS:
            raise RowUnreadable(1, f"the header is not {','.join(COLUMNS)}")
        for cells in reader:
            number = reader.line_num
            if len(cells) != len(COLUMNS):
                raise RowUnreadable(number, f"{len(cells)} cells, not {len(COLUMNS)}")
            document: dict[str, Any] = dict(zip(COLUMNS, cells, strict=True))
            try:
                for name in ("partition", "position", "version"):
                    document[name] = int(document[name])
                for name in ("payload", "metadata"):
                    document[name] = json.loads(document[name])
            except ValueError as error:
                raise RowUnreadable(
                    number, f"a cell is not what its column holds ({error})"
                ) from error
            yield row_from(document, number)
    except csv.Error as error:
        raise RowUnreadable(reader.line_num, f"not CSV ({error})") from error


def read_rows(lines: Iterable[str]) -> Iterator[AuditRow]:
    """JSON Lines or CSV, told apart by the first line (a CSV export starts with its header)."""
    iterator = iter(lines)
    first = next(iterator, None)
    if first is None:
        return iter(())

    def again() -> Iterator[str]:
        yield first
        yield from iterator

    return read_csv(again()) if first.startswith(COLUMNS[0] + ",") else read_jsonl(again())
