"""Signed checkpoints: a statement, signed by the ledger's audit key, that the log of `partition`
had hash `hash` at `position` at time `signed_at`.

An auditor who kept a checkpoint can later hold the ledger to that past state: any export whose
row at `position` has another hash was rewritten. The signature is Ed25519 over the canonical
JSON of every other field; signing itself lives in adapters/audit/signing.py, this module only
says what is signed, so that the service and the offline verifier agree byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

CHECKPOINT_STREAM = "audit-checkpoints"
CHECKPOINT_TYPE = "AuditCheckpointSigned"
KEY_ID_HEX_DIGITS = 16


class CheckpointUnreadable(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Checkpoint:
    partition: int
    position: int
    hash: str  # hex of the chain hash at `position`
    signed_at: str  # ISO 8601, UTC
    key_id: str
    signature: str  # hex of the Ed25519 signature over `signed_bytes`

    def signed_bytes(self) -> bytes:
        return signed_bytes(self.partition, self.position, self.hash, self.signed_at, self.key_id)

    def document(self) -> dict[str, Any]:
        return asdict(self)


def signed_bytes(
    partition: int, position: int, hash_hex: str, signed_at: str, key_id: str
) -> bytes:
    document = {
        "hash": hash_hex,
        "key_id": key_id,
        "partition": partition,
        "position": position,
        "signed_at": signed_at,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id_of(raw_public_key: bytes) -> str:
    """The first 16 hex digits of sha256 over the raw 32-byte public key."""
    return hashlib.sha256(raw_public_key).hexdigest()[:KEY_ID_HEX_DIGITS]


def checkpoint_of(document: Any) -> Checkpoint:
    """A checkpoint from its JSON form; CheckpointUnreadable when it is not one."""
    fields = {"partition": int, "position": int, "hash": str, "signed_at": str}
    fields |= {"key_id": str, "signature": str}
    if not isinstance(document, dict) or not set(fields) <= set(document):
        raise CheckpointUnreadable(f"a checkpoint has the fields {', '.join(fields)}")
    for name, wanted in fields.items():
        if not isinstance(document[name], wanted) or isinstance(document[name], bool):
            raise CheckpointUnreadable(f"checkpoint {name} is not {wanted.__name__}")
    return Checkpoint(**{name: document[name] for name in fields})


def read_checkpoints(text: str) -> list[Checkpoint]:
    """A file of checkpoints as the API lists them (`{"items": [...]}`), a JSON array, or JSON
    Lines of single checkpoints (several saved pages concatenated read the same way)."""
    try:
        whole = json.loads(text)
    except ValueError:
        documents: list[Any] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    documents.extend(_items(json.loads(line)))
                except ValueError as error:
                    raise CheckpointUnreadable(f"line {number} is not JSON") from error
        return [checkpoint_of(d) for d in documents]
    return [checkpoint_of(d) for d in _items(whole)]


def _items(document: Any) -> list[Any]:
    if isinstance(document, dict) and "items" in document:
        return list(document["items"])
    if isinstance(document, list):
        return document
    return [document]
