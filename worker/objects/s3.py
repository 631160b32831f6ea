"""An S3-compatible object store (AWS S3, SeaweedFS, MinIO, Garage...) through boto3 (`pip install -e ".[s3]"`).

`put` streams: a stream shorter than one part is one PutObject, a longer one a multipart upload of
`part_bytes` parts (one part in memory at a time), aborted on any failure, so a half-written object is never
visible. The SHA-256 is stored as the object's `sha256` metadata, which S3 fixes when the upload starts: a
caller that knows the hash (every upload the API has already checked does) gets a direct upload, verified on
the way; otherwise the bytes go to a staging key under `.staging/` first and are copied onto the key with
their hash inside the server (no second transfer from here), then the staging object is removed.
Connection failures and 5xx answers raise `StoreUnavailableError`. Standard library and boto3 only.
"""

from __future__ import annotations

import io
import uuid
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from worker.objects import (
    PART_BYTES,
    ContentMismatchError,
    HashingReader,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
    StoreUnavailableError,
    check_key,
    check_sha256,
)

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part but the last
MAX_COPY_BYTES = 5 * 1024**3  # CopyObject's limit; larger objects are copied part by part
MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4's limit


class S3Store(ObjectStore):
    """Objects under `prefix` in one bucket of an S3-compatible server (path-style addressing, SigV4)."""

    def __init__(
        self,
        *,
        endpoint_url: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        prefix: str = "",
        part_bytes: int = PART_BYTES,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes {part_bytes}: S3 parts are at least {MIN_PART_BYTES} bytes")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix:
            check_key(prefix.rstrip("/"))
        self.bucket = bucket
        self.prefix = prefix
        self.part_bytes = part_bytes
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (deployments and tests; the API never calls it)."""
        with _mapped("bucket " + self.bucket):
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _status(exc) != 404:
                    raise
                self._client.create_bucket(Bucket=self.bucket)

    def put(self, key: str, stream: BinaryIO, *, sha256: str | None = None) -> ObjectInfo:
        full = self._full(key)
        if sha256 is not None:
            expected = check_sha256(sha256)
            size = self._upload(full, HashingReader(stream, self.part_bytes), expected=expected, key=key)
            return ObjectInfo(key=key, size=size, sha256=expected)
        staging = f"{self.prefix}.staging/{uuid.uuid4().hex}"
        reader = HashingReader(stream, self.part_bytes)
        try:
            size = self._upload(staging, reader, expected=None, key=key)
            digest = reader.hexdigest()
            self._copy(staging, full, size=size, metadata={"sha256": digest}, key=key)
        finally:
            with _mapped(key):
                self._client.delete_object(Bucket=self.bucket, Key=staging)
        return ObjectInfo(key=key, size=size, sha256=digest)

    def _upload(self, full: str, reader: HashingReader, *, expected: str | None, key: str) -> int:
        metadata = {"sha256": expected} if expected else {}
        first = reader.read_part()
        if len(first) < self.part_bytes:  # the whole stream fits one part: one request, checked before it
            _check(reader, expected, key)
            with _mapped(key):
                self._client.put_object(Bucket=self.bucket, Key=full, Body=first, Metadata=metadata)
            return reader.size
        with _mapped(key):
            upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=full, Metadata=metadata)[
                "UploadId"
            ]
        try:
            parts: list[dict[str, Any]] = []
            part = first
            while part:
                with _mapped(key):
                    answer = self._client.upload_part(
                        Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=len(parts) + 1, Body=part
                    )
                parts.append({"PartNumber": len(parts) + 1, "ETag": answer["ETag"]})
                part = reader.read_part()
            _check(reader, expected, key)
            with _mapped(key):
                self._client.complete_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            with _mapped(key):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            raise
        return reader.size

    def _copy(self, source: str, target: str, *, size: int, metadata: dict[str, str], key: str) -> None:
        with _mapped(key):
            if size <= MAX_COPY_BYTES:
                self._client.copy_object(
                    Bucket=self.bucket,
                    Key=target,
                    CopySource={"Bucket": self.bucket, "Key": source},
                    Metadata=metadata,
                    MetadataDirective="REPLACE",
                )
            else:  # boto3's managed copy: UploadPartCopy, metadata given to the multipart upload
                self._client.copy(
                    {"Bucket": self.bucket, "Key": source},
                    self.bucket,
                    target,
                    ExtraArgs={"Metadata": metadata, "MetadataDirective": "REPLACE"},
                )

    def open(self, key: str) -> BinaryIO:
        with _mapped(key):
            body = self._client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        return io.BufferedReader(_BodyReader(body, key), buffer_size=1024 * 1024)

    def info(self, key: str) -> ObjectInfo | None:
        try:
            with _mapped(key):
                head = self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ObjectNotFoundError:
            return None
        size = int(head["ContentLength"])
        recorded = head.get("Metadata", {}).get("sha256")
        if recorded is None:  # written by another tool: hash it (streamed), without rewriting it
            with self.open(key) as source:
                reader = HashingReader(source, self.part_bytes)
                while reader.read_part():
                    pass
            recorded = reader.hexdigest()
        return ObjectInfo(key=key, size=size, sha256=recorded)

    def delete(self, key: str) -> None:
        with _mapped(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def presigned_get(self, key: str, *, expires_s: int) -> str:
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise ValueError(f"expires_s {expires_s}: must be between 1 and {MAX_PRESIGN_S} seconds")
        with _mapped(key):
            url: str = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)}, ExpiresIn=expires_s
            )
        return url


def _check(reader: HashingReader, expected: str | None, key: str) -> None:
    if expected is not None and reader.hexdigest() != expected:
        raise ContentMismatchError(f"object {key!r}: content has sha256 {reader.hexdigest()}, expected {expected}")


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


class _mapped:  # noqa: N801 - used as a statement: `with _mapped(key):`
    """boto3's errors as the store's: missing -> ObjectNotFoundError, unreachable or 5xx -> StoreUnavailableError."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if exc is None or isinstance(exc, ObjectStoreError):
            return
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = _status(exc)
            if code in {"NoSuchKey", "404", "NotFound"} or (status == 404 and code != "NoSuchBucket"):
                raise ObjectNotFoundError(f"object {self.key!r} does not exist") from None
            if status >= 500 or code in {"SlowDown", "ServiceUnavailable", "InternalError"}:
                message = f"object store answered {status} {code} for {self.key!r}; retry later"
                raise StoreUnavailableError(message) from exc
            raise ObjectStoreError(
                f"object store refused {self.key!r}: {status} {code} (check the bucket, access key and secret)"
            ) from exc
        if isinstance(exc, ConnectionError | HTTPClientError | BotoCoreError):
            raise StoreUnavailableError(f"object store unreachable for {self.key!r}: {exc}") from exc


class _BodyReader(io.RawIOBase):
    """botocore's streaming body as a raw stream, so callers get a plain BufferedReader."""

    def __init__(self, body: Any, key: str) -> None:
        self._body = body
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with _mapped(self._key):
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
