"""The offline verifier of an audit export: no database, only rows, checkpoints and a key.

Rows are chained here exactly as the store chains them (with ledger/hashchain.py), so every
tampering test starts from a file that verifies and changes one thing in it.
"""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.audit import offline
from adapters.audit.offline import ExportBroken, verify_export
from adapters.audit.signing import Signer, public_key_of_pem, signature_holds
from adapters.storage.postgres_store import chain_events
from ledger.audit_files import csv_lines, read_rows
from ledger.audit_rows import (
    jsonl_line,
    jsonl_line_of,
    payload_bytes,
    payload_document,
    read_jsonl,
    row_of,
)
from ledger.checkpoints import Checkpoint, read_checkpoints
from ledger.codec import dumps_canonical
from ledger.hashchain import GENESIS_HASH
from ledger.ports import NewEvent

EVENTS = 12


def chained(events: list[NewEvent], position: int = 0, prev_hash: bytes = GENESIS_HASH):
    """The events as the store records them: positions after `position`, linked by hash."""
    return chain_events(0, position, prev_hash, events)


def exported_events(count: int = EVENTS) -> list[NewEvent]:
    return [
        NewEvent(
            stream_id=f"stream-{n % 3}",
            version=n // 3 + 1,
            type="Payment.DepositObserved" if n % 2 else "record.raw",
            payload=dumps_canonical({"amount": f"{n}.50", "note": "naïve ✓"})
            if n % 2
            else b"\x00raw provider bytes \xff",
            metadata={"topic": "ledger.payment:Payment.DepositObserved", "n": n},
        )
        for n in range(count)
    ]


def exported_lines(count: int = EVENTS) -> list[str]:
    return [jsonl_line(row_of(event)) for event in chained(exported_events(count))]


def verify_lines(lines: list[str], **options):
    return verify_export(read_rows(lines), **options)


def broken_at(lines: list[str], **options) -> int | None:
    with pytest.raises(ExportBroken) as raised:
        verify_lines(lines, **options)
    return raised.value.position


def edited(line: str, **changes) -> str:
    document = json.loads(line)
    document.update(changes)
    return json.dumps(document, ensure_ascii=False) + "\n"


def flip_hex(text: str) -> str:
    return ("1" if text[0] == "0" else "0") + text[1:]


def test_an_untouched_export_verifies_with_its_counts():
    verified = verify_lines(exported_lines())
    assert (EVENTS, 1, EVENTS) == (
        verified.rows,
        verified.first_position,
        verified.last_position,
    )


def test_canonical_json_payloads_show_decoded_and_other_bytes_as_base64():
    assert ("json", {"a": "1"}) == payload_document(b'{"a":"1"}')
    assert "base64" == payload_document(b'{"a": "1"}')[0]  # not canonical: bytes would differ
    for raw in (b'{"a":"1"}', b'{"a": "1"}', b"\x00\xff"):
        assert raw == payload_bytes(*payload_document(raw))


def test_one_byte_changed_in_a_json_payload_is_found_at_its_position():
    lines = exported_lines()
    document = json.loads(lines[5])
    assert "5.50" == document["payload"]["amount"]
    document["payload"]["amount"] = "5.51"
    lines[5] = json.dumps(document) + "\n"
    assert 6 == broken_at(lines)


def test_one_byte_changed_in_a_base64_payload_is_found_at_its_position():
    lines = exported_lines()
    document = json.loads(lines[6])
    raw = bytearray(payload_bytes("base64", document["payload"]))
    raw[3] ^= 1
    lines[6] = edited(lines[6], payload=payload_document(bytes(raw))[1])
    assert 7 == broken_at(lines)


def test_a_changed_hash_is_found_at_its_position():
    lines = exported_lines()
    lines[7] = edited(lines[7], hash=flip_hex(json.loads(lines[7])["hash"]))
    assert 8 == broken_at(lines)


def test_a_changed_prev_hash_is_found_at_its_position():
    lines = exported_lines()
    lines[2] = edited(lines[2], prev_hash=flip_hex(json.loads(lines[2])["prev_hash"]))
    assert 3 == broken_at(lines)


def test_a_deleted_row_is_named_by_the_missing_position():
    lines = exported_lines()
    del lines[5]
    assert 6 == broken_at(lines)


def test_two_swapped_rows_are_found_at_the_first_position_out_of_place():
    lines = exported_lines()
    lines[3], lines[4] = lines[4], lines[3]
    assert 4 == broken_at(lines)


def test_an_unreadable_line_is_reported_without_a_position():
    lines = exported_lines()
    lines[2] = "{not json\n"
    assert broken_at(lines) is None


def test_csv_and_jsonl_carry_the_same_rows():
    lines = exported_lines()
    rows = list(read_rows(lines))
    csv_text = csv_lines(rows, header=True)
    assert rows == list(read_rows(csv_text.splitlines(keepends=True)))
    assert EVENTS == verify_export(read_rows(csv_text.splitlines(keepends=True))).rows


def signed_checkpoint(tmp_path, lines: list[str], position: int) -> tuple[Checkpoint, Signer]:
    signer = Signer(tmp_path / "key.pem", create=True)
    row = json.loads(lines[position - 1])
    return signer.sign(0, position, row["hash"]), signer


def test_a_checkpoint_signed_by_the_key_holds_the_export_to_its_hash(tmp_path):
    lines = exported_lines()
    checkpoint, signer = signed_checkpoint(tmp_path, lines, 9)
    key = public_key_of_pem(signer.public_key().pem.encode())
    verified = verify_lines(lines, checkpoints=[checkpoint], public_key=key)
    assert 1 == verified.checkpoints
    assert [checkpoint] == read_checkpoints(json.dumps({"items": [checkpoint.document()]}))


def test_a_forged_checkpoint_signature_is_refused(tmp_path):
    lines = exported_lines()
    checkpoint, signer = signed_checkpoint(tmp_path, lines, 9)
    key = public_key_of_pem(signer.public_key().pem.encode())
    forged = Checkpoint(**{**checkpoint.document(), "signature": flip_hex(checkpoint.signature)})
    assert not signature_holds(forged, key)
    assert 9 == broken_at(lines, checkpoints=[forged], public_key=key)


def test_a_checkpoint_signed_by_another_key_is_refused(tmp_path):
    lines = exported_lines()
    checkpoint, _ = signed_checkpoint(tmp_path, lines, 9)
    other = Ed25519PrivateKey.generate().public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert 9 == broken_at(lines, checkpoints=[checkpoint], public_key=public_key_of_pem(pem))


def test_a_rewritten_history_is_caught_by_a_checkpoint_taken_before(tmp_path):
    """A rewriter can rechain every hash after a change, but cannot re-sign the checkpoint."""
    lines = exported_lines()
    checkpoint, signer = signed_checkpoint(tmp_path, lines, 9)
    rewritten = exported_lines()  # the same events re-recorded: a consistent chain of its own
    key = public_key_of_pem(signer.public_key().pem.encode())
    assert EVENTS == verify_lines(rewritten).rows
    assert 9 == broken_at(rewritten, checkpoints=[checkpoint], public_key=key)


def test_the_generated_key_file_is_readable_by_its_owner_only(tmp_path):
    signer = Signer(tmp_path / "data" / "key.pem", create=True)
    first = signer.public_key()
    assert 0o600 == (tmp_path / "data" / "key.pem").stat().st_mode & 0o777
    assert first == Signer(tmp_path / "data" / "key.pem", create=True).public_key()
    assert 16 == len(first.key_id)


def test_the_fast_jsonl_line_says_what_the_row_says():
    events = [
        NewEvent("s-1", 1, "T", dumps_canonical({"a": "1", "ü": ["x\n", None]}), {"k": "v"}),
        NewEvent('s"2', 1, "T", b'{"a": 1}', {}),  # JSON, but not canonical: base64
        NewEvent("s-3", 1, "T", b"\xff\x00", {"n": 1.5}),
    ]
    for event in chained(events):
        assert json.loads(jsonl_line(row_of(event))) == json.loads(jsonl_line_of(event))
    assert EVENTS == verify_lines([jsonl_line_of(e) for e in chained(exported_events())]).rows


def _outcome(verify):
    try:
        verified = verify()
    except ExportBroken as error:
        return ("broken", error.position, error.reason)
    return ("verified", verified.rows, verified.first_position, verified.last_position)


def test_chunked_verify_across_processes_reports_what_the_row_by_row_verify_does(monkeypatch):
    """JSON Lines are checked in chunks (here of 5 lines, over 2 processes) joined at their
    boundaries: every tampering, at every position, on or beside a boundary, is reported
    exactly as the sequential verifier of AuditRows reports it."""
    monkeypatch.setattr(offline, "CHUNK_LINES", 5)
    count = 23
    lines = exported_lines(count)
    variants = [lines, [*lines, "\n"], ["\n", *lines]]
    for index in range(count):
        document = json.loads(lines[index])
        deleted = lines[:index] + lines[index + 1 :]
        swapped = list(lines)
        if index + 1 < count:
            swapped[index], swapped[index + 1] = swapped[index + 1], swapped[index]
        bad_line = [*lines[:index], "{not json\n", *lines[index + 1 :]]
        variants += [deleted, swapped, bad_line]
        for name in ("hash", "prev_hash"):
            variants.append(
                [*lines[:index], edited(lines[index], **{name: flip_hex(document[name])}),
                 *lines[index + 1 :]]
            )  # fmt: skip
        variants.append([*lines[:index], edited(lines[index], partition=1), *lines[index + 1 :]])
    for variant in variants:
        for options in ({}, {"continuous": False}):
            sequential = _outcome(
                lambda v=variant, o=options: offline.verify_rows(read_jsonl(v), **o)[0]
            )
            for processes in (1, 2):
                chunked = _outcome(
                    lambda v=variant, o=options, p=processes: offline.verify_jsonl(
                        iter(v), processes=p, **o
                    )[0]
                )
                assert sequential == chunked
