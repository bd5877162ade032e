"""The ledger's Ed25519 audit key: loaded from `[audit] signing_key_file`, else generated once
in the data directory, readable by its owner only (0600).

The key is read the first time something is signed or the public key is asked for, not at
start-up, so a service that never makes a checkpoint never writes a key file.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from adapters.storage.embedded import default_data_dir
from ledger.checkpoints import Checkpoint, key_id_of, signed_bytes

KEY_FILE_NAME = "audit-ed25519.pem"
OWNER_ONLY = 0o600


class KeyUnreadable(ValueError):
    pass


def default_key_file(data_dir: Path | None) -> Path:
    """`data_dir`/audit-ed25519.pem, else beside the embedded database in the user data folder."""
    return (data_dir or default_data_dir().parent) / KEY_FILE_NAME


def _generate(path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: two processes starting at once must not both write a key; the loser reads the
    # winner's. The mode is given at creation so the secret is never readable by others.
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)


def load_or_create_key(path: Path, *, create: bool) -> Ed25519PrivateKey:
    if create and not path.exists():
        _generate(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise KeyUnreadable(f"audit signing key {path} is unreadable: {error}") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyUnreadable(f"audit signing key {path} is not an Ed25519 key")
    return key


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_of_pem(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as error:
        raise KeyUnreadable(f"not a PEM public key: {error}") from error
    if not isinstance(key, Ed25519PublicKey):
        raise KeyUnreadable("the public key is not an Ed25519 key")
    return key


@dataclass(frozen=True, slots=True)
class PublicKey:
    pem: str
    key_id: str


class Signer:
    """Signs checkpoints with the key at `path` (generated there on first use if `create`)."""

    def __init__(self, path: Path, *, create: bool) -> None:
        self._path = path
        self._create = create
        self._key: Ed25519PrivateKey | None = None

    def _private(self) -> Ed25519PrivateKey:
        if self._key is None:
            self._key = load_or_create_key(self._path, create=self._create)
        return self._key

    def public_key(self) -> PublicKey:
        public = self._private().public_key()
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return PublicKey(pem.decode("ascii"), key_id_of(raw_public(public)))

    def sign(self, partition: int, position: int, hash_hex: str) -> Checkpoint:
        key_id = self.public_key().key_id
        signed_at = datetime.now(UTC).isoformat()
        message = signed_bytes(partition, position, hash_hex, signed_at, key_id)
        signature = self._private().sign(message).hex()
        return Checkpoint(partition, position, hash_hex, signed_at, key_id, signature)


def signature_holds(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    """Whether `checkpoint` was signed by the holder of `public_key`, unchanged since."""
    if checkpoint.key_id != key_id_of(raw_public(public_key)):
        return False
    try:
        public_key.verify(bytes.fromhex(checkpoint.signature), checkpoint.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return True
