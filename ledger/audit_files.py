"""Export files: CSV (RFC 4180) rows, and reading either format back.

JSON Lines is written and read in ledger/audit_rows.py; a CSV row carries the same fields, with
`payload` and `metadata` as JSON text cells, so both formats read back to equal rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

from ledger.audit_json import compact, loads
from ledger.audit_rows import COLUMNS, AuditRow, RowUnreadable, document_of, read_jsonl, row_from


def csv_lines(rows: Iterable[AuditRow], *, header: bool) -> str:
    """RFC 4180 text (CRLF line ends, quotes doubled); payload and metadata as JSON text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header:
        writer.writerow(COLUMNS)
    for row in rows:
        cells = document_of(row)
        cells["payload"] = compact(row.payload)
        cells["metadata"] = compact(row.metadata)
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
                    document[name] = loads(document[name])
            except ValueError as error:
                raise RowUnreadable(
                    number, f"a cell is not what its column holds ({error})"
                ) from error
            yield row_from(document, number)
    except csv.Error as error:
        raise RowUnreadable(reader.line_num, f"not CSV ({error})") from error


class JsonlRows(Iterator[AuditRow]):
    """The rows of a JSON Lines export, read as they are iterated. A verifier that has not
    started iterating may take `lines` (the text, first line included) and read it itself."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self._rows: Iterator[AuditRow] | None = None

    @property
    def untouched(self) -> bool:
        return self._rows is None

    def __next__(self) -> AuditRow:
        if self._rows is None:
            self._rows = read_jsonl(self.lines)
        return next(self._rows)


def read_rows(lines: Iterable[str]) -> Iterator[AuditRow]:
    """JSON Lines or CSV, told apart by the first line (a CSV export starts with its header)."""
    iterator = iter(lines)
    first = next(iterator, None)
    if first is None:
        return iter(())

    def again() -> Iterator[str]:
        yield first
        yield from iterator

    return read_csv(again()) if first.startswith(COLUMNS[0] + ",") else JsonlRows(again())
