"""Models in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, R2, ...), with boto3.

boto3's client is synchronous, so every request runs in a worker thread (asyncio.to_thread)
and never blocks the event loop; one client is shared (botocore's clients are thread-safe).
Objects are `<prefix><sha256>.glb`, written with their SHA-256 checksum (the store refuses a
body that does not match it) and checked again when read. `download_url` presigns a GET
(local signing, no request) valid for `url_ttl_s`, so any glTF loader can fetch the model
without a token. Credentials come from boto3's usual chain: AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN), a profile, or the workload's role.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.avatar.storage import corrupt, missing
from services.common.errors import Unavailable

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

log = logging.getLogger("arconv.avatar.s3")

_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3StoreError(Exception):
    """The bucket cannot be used (missing, or access denied); the message says which."""


class S3ModelStore:
    """GLBs by sha256 in one bucket of an S3-compatible store."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "models/",
        endpoint_url: str = "",
        region: str = "",
        url_ttl_s: int = 3600,
        timeout_s: float = 10.0,
        client: S3Client | None = None,
    ) -> None:
        self._bucket = bucket
        self._prefix = prefix
        self._ttl = url_ttl_s
        self._client: S3Client = client or boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            config=Config(
                signature_version="s3v4",
                # A custom endpoint (MinIO, a local server) rarely has per-bucket host names.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"mode": "standard", "max_attempts": 3},
                max_pool_connections=16,
            ),
        )

    def key(self, sha256: str) -> str:
        return f"{self._prefix}{sha256}.glb"

    async def check(self) -> None:
        """Start-up check that the bucket exists and is reachable with these credentials."""
        try:
            await asyncio.to_thread(self._client.head_bucket, Bucket=self._bucket)
        except ClientError as exc:
            raise S3StoreError(
                f"S3 bucket {self._bucket!r} cannot be used ({_code(exc)}); check"
                " ARCONV_S3_BUCKET, ARCONV_S3_ENDPOINT_URL and the AWS credentials"
            ) from exc
        except BotoCoreError as exc:
            # Unreachable now: the service starts and each request reports UNAVAILABLE.
            log.warning("S3 bucket %r is not reachable at start-up: %s", self._bucket, exc)

    def _put(self, data: bytes) -> str:
        # Always written, never "already there?": the key names the content, so writing it
        # again changes nothing, except that it repairs an object damaged in the store.
        sha = hashlib.sha256(data).hexdigest()
        self._client.put_object(
            Bucket=self._bucket,
            Key=self.key(sha),
            Body=data,
            ContentType="model/gltf-binary",
            ChecksumSHA256=base64.b64encode(bytes.fromhex(sha)).decode(),
            CacheControl="public, max-age=31536000, immutable",
        )
        return sha

    async def put(self, data: bytes) -> str:
        return await _unavailable_on_error(self._put, data)

    def _read(self, sha256: str) -> bytes:
        try:
            obj = self._client.get_object(Bucket=self._bucket, Key=self.key(sha256))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise missing(sha256) from exc
            raise
        body = obj["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise corrupt(sha256)
        return data

    async def read(self, sha256: str) -> bytes:
        return await _unavailable_on_error(self._read, sha256)

    def download_url(self, sha256: str) -> str:
        url: str = self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": self.key(sha256)},
            ExpiresIn=self._ttl,
        )
        return url


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(exc)


A = TypeVar("A")
T = TypeVar("T")


async def _unavailable_on_error(fn: Callable[[A], T], arg: A) -> T:
    try:
        return await asyncio.to_thread(fn, arg)
    except ClientError as exc:
        raise Unavailable(f"the model store refused the request ({_code(exc)})") from exc
    except BotoCoreError as exc:
        raise Unavailable(f"the model store is not reachable: {exc}") from exc
