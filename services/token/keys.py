"""Signing keys: Ed25519 private keys with key ids, loaded from ARCONV_TOKEN_KEYS.

ARCONV_TOKEN_KEYS is either

- a directory of PEM files (PKCS#8 Ed25519 private keys), one per key, named `<kid>.pem`;
  the key whose kid sorts last signs, so name keys by date (`2025-06-01.pem`), or
- a JSON list `[{"kid": "...", "pem": "-----BEGIN PRIVATE KEY-----..."}, ...]`, oldest first;
  the last one signs.

Every key verifies. To rotate: add the new key (it signs from the next start-up), keep the old
one for at least a token lifetime plus the leeway, then remove it.

Without ARCONV_TOKEN_KEYS a development key is generated once under var/token-keys/ (mode
0600) and reused; its kid starts with `dev-`, and it is refused when ARCONV_ENV=production.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.common.config import ConfigError

_KID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEV_PREFIX = "dev-"
DEV_DIR = "token-keys"
DEV_KID = "dev-1"


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 8037)."""
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": x,
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }


class KeyRing:
    """Every configured key, by kid; the newest signs."""

    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ConfigError("ARCONV_TOKEN_KEYS holds no keys")
        seen: dict[str, SigningKey] = {}
        for k in keys:
            if k.kid in seen:
                raise ConfigError(f"ARCONV_TOKEN_KEYS has the key id {k.kid!r} twice")
            seen[k.kid] = k
        self._by_kid = seen
        self.signer = keys[-1]
        self.keys = tuple(keys)

    def public(self, kid: str) -> Ed25519PublicKey | None:
        k = self._by_kid.get(kid)
        return None if k is None else k.public

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [k.jwk() for k in self.keys]}


def _parse_pem(kid: str, pem: bytes, where: str) -> SigningKey:
    if not _KID.match(kid):
        raise ConfigError(f"{where}: key id {kid!r} must be 1-64 characters of [A-Za-z0-9._-]")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{where}: key {kid!r} is not an Ed25519 key")
    return SigningKey(kid=kid, private=key)


def _from_json(text: str) -> list[SigningKey]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"ARCONV_TOKEN_KEYS is not valid JSON: {exc.msg}") from exc
    if not isinstance(items, list):
        raise ConfigError("ARCONV_TOKEN_KEYS JSON must be a list of {kid, pem} objects")
    keys = []
    for i, item in enumerate(items):
        where = f"ARCONV_TOKEN_KEYS[{i}]"
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("kid"), str)
            or not isinstance(item.get("pem"), str)
        ):
            raise ConfigError(f"{where} must be an object with string fields kid and pem")
        keys.append(_parse_pem(item["kid"], item["pem"].encode(), where))
    return keys


def _from_dir(path: Path) -> list[SigningKey]:
    if not path.is_dir():
        raise ConfigError(f"ARCONV_TOKEN_KEYS {str(path)!r} is neither a JSON list nor a directory")
    keys = []
    for f in sorted(path.glob("*.pem"), key=lambda p: p.stem):
        mode = f.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"key file {str(f)!r} is readable by others (mode {stat.S_IMODE(mode):04o});"
                " chmod 600 it"
            )
        keys.append(_parse_pem(f.stem, f.read_bytes(), f"key file {str(f)!r}"))
    if not keys:
        raise ConfigError(f"ARCONV_TOKEN_KEYS directory {str(path)!r} has no <kid>.pem files")
    return keys


def pem_of(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _dev_key(var_dir: Path) -> list[SigningKey]:
    folder = var_dir / DEV_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = folder / f"{DEV_KID}.pem"
    if not final.exists():
        # Written aside and linked into place, so replicas starting together agree on one key.
        tmp = folder / f".{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(pem_of(Ed25519PrivateKey.generate()))
            with contextlib.suppress(FileExistsError):
                os.link(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
    return _from_dir(folder)


def load_keys(spec: str, *, var_dir: Path, production: bool) -> KeyRing:
    """The key ring from ARCONV_TOKEN_KEYS (`spec`), or the development key.

    Raises ConfigError with the variable to change when the keys are missing, unreadable,
    not Ed25519, or development keys in production.
    """
    spec = spec.strip()
    if not spec:
        if production:
            raise ConfigError(
                "ARCONV_TOKEN_KEYS is not set; production needs Ed25519 signing keys"
                " (a directory of <kid>.pem files or a JSON list of {kid, pem})"
            )
        return KeyRing(_dev_key(var_dir))
    keys = _from_json(spec) if spec.startswith("[") else _from_dir(Path(spec))
    if production and any(k.kid.startswith(DEV_PREFIX) for k in keys):
        raise ConfigError(
            "ARCONV_TOKEN_KEYS holds a development key (kid 'dev-...'); generate production keys"
        )
    return KeyRing(keys)
