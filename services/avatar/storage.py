"""Content-addressed model storage, keyed by the sha256 of each GLB.

`ModelStore` is what the avatar service needs of a store; `FileModelStore` (`<sha256>.glb`
files under ARCONV_MODEL_DIR) is the embedded default, `S3ModelStore`
(services/avatar/s3store.py) keeps models in S3-compatible object storage shared by replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from services.avatar.errors import ModelCorrupt


class ModelStore(Protocol):
    """Stores GLBs by content; reads give back verified bytes."""

    async def put(self, data: bytes) -> str:
        """Stores `data`; returns its sha256 (the key). Storing it again is harmless."""
        ...

    async def read(self, sha256: str) -> bytes:
        """The verified content of `sha256`; ModelCorrupt (DATA_LOSS) if missing or altered."""
        ...

    def download_url(self, sha256: str) -> str:
        """A time-limited URL any HTTP client can fetch the model from, or "" if none."""
        ...


def missing(sha256: str) -> ModelCorrupt:
    return ModelCorrupt(
        f"model file {sha256}.glb is missing from the model store; regenerate the avatar"
        " with GenerateAvatar(force=true)"
    )


def corrupt(sha256: str) -> ModelCorrupt:
    return ModelCorrupt(
        f"model file {sha256}.glb is corrupt (its sha256 does not match); regenerate"
        " the avatar with GenerateAvatar(force=true)"
    )


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FileModelStore:
    """Files named by the sha256 of their content, written atomically (temp file + rename)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def path(self, sha256: str) -> Path:
        return self._dir / f"{sha256}.glb"

    def _put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if target.is_file() and _sha256_of(target) == sha:
            return sha  # already stored; a damaged copy is replaced below
        self._dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".tmp-", suffix=".glb")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return sha

    async def put(self, data: bytes) -> str:
        """Stores `data`; returns its sha256 (the key)."""
        return await asyncio.to_thread(self._put, data)

    def _read(self, sha256: str) -> bytes:
        try:
            data = self.path(sha256).read_bytes()
        except FileNotFoundError as exc:
            raise missing(sha256) from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise corrupt(sha256)
        return data

    async def read(self, sha256: str) -> bytes:
        """The verified content of `sha256`; ModelCorrupt (DATA_LOSS) if missing or altered."""
        return await asyncio.to_thread(self._read, sha256)

    def download_url(self, sha256: str) -> str:
        return ""  # files are served by DownloadModel (or a CDN at ARCONV_MODEL_BASE_URL)
