"""The hash chain over the log: hash = sha256(prev_hash || canonical bytes of the event).

Pure functions, shared by the store (when appending), by `ledger audit verify` and by anyone
verifying an export offline. The canonical bytes cover everything an event says, including its
position and recorded time, so moving, re-timing or editing an event breaks the chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ledger.audit_json import canonical, canonical_plain
from ledger.errors import HashChainBroken

GENESIS_HASH = bytes(32)


def canonical_bytes(  # noqa: PLR0913 - every field the hash covers, and `plain`
    *,
    partition: int,
    position: int,
    stream_id: str,
    version: int,
    event_type: str,
    payload: bytes,
    metadata: dict[str, Any],
    recorded_at: datetime,
    plain: bool = False,
) -> bytes:
    """`plain`: the caller knows `metadata` is `floatless` (ledger/audit_json.py), as when it
    was read by `loads`; the bytes are the same either way."""
    document = {
        "metadata": metadata,
        "partition": partition,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "position": position,
        "recorded_at": recorded_at.isoformat(),
        "stream_id": stream_id,
        "type": event_type,
        "version": version,
    }
    # Byte for byte the stdlib's canonical JSON (sorted keys, no spaces, UTF-8 unescaped).
    return canonical_plain(document) if plain else canonical(document)


def chain_hash(prev_hash: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(prev_hash + canonical).digest()


def verify_chain(events: Iterable[Any], *, start_hash: bytes = GENESIS_HASH) -> int:
    """Checks `RecordedEvent`-like objects in position order; returns how many were checked.

    Raises HashChainBroken naming the first position whose link or content does not verify.
    """
    expected_prev = start_hash
    count = 0
    for event in events:
        if event.prev_hash != expected_prev:
            raise HashChainBroken(event.position, "prev_hash does not match the previous event")
        canonical = canonical_bytes(
            partition=event.partition,
            position=event.position,
            stream_id=event.stream_id,
            version=event.version,
            event_type=event.type,
            payload=event.payload,
            metadata=event.metadata,
            recorded_at=event.recorded_at,
        )
        if chain_hash(event.prev_hash, canonical) != event.hash:
            raise HashChainBroken(event.position, "content does not match its hash")
        expected_prev = event.hash
        count += 1
    return count
