"""Ed25519 signing of a run's digest (the `cryptography` package, imported only when used).

The key comes from BATCHCANCEL_AUDIT_SIGNING_KEY through config.py: PEM text of an Ed25519
private key, or its 32 raw bytes as 64 hex digits. Only the signature (hex) and the public key
(hex) are stored; the private key never leaves the process.
"""

from __future__ import annotations

from typing import Any

from batchcancel.errors import ConfigError

__all__ = ["load_private_key", "public_hex", "sign", "verify_signature"]


def load_private_key(text: str) -> Any:
    """The Ed25519 private key of `text`; ConfigError (never quoting it) if it is not one."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        raise ConfigError(
            "BATCHCANCEL_AUDIT_SIGNING_KEY is set but the cryptography package is not "
            "installed: pip install 'batchcancel[signing]'"
        ) from None
    stripped = text.strip()
    try:
        if stripped.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(stripped.encode(), password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(stripped))
    except (ValueError, TypeError):
        raise ConfigError(
            "BATCHCANCEL_AUDIT_SIGNING_KEY is not an Ed25519 private key (PEM, or 64 hex digits)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("BATCHCANCEL_AUDIT_SIGNING_KEY is not an Ed25519 key")
    return key


def sign(key: Any, digest: str) -> str:
    """The signature (hex) of a digest's ASCII text."""
    return bytes(key.sign(digest.encode())).hex()


def public_hex(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return bytes(raw).hex()


def verify_signature(public_key_hex: str, digest: str, signature_hex: str) -> bool:
    """Whether `signature_hex` is the public key's signature of `digest`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex)).verify(
            bytes.fromhex(signature_hex), digest.encode()
        )
    except (InvalidSignature, ValueError):
        return False
    return True
