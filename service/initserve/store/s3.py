"""A checkpoint store in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, …) through boto3.

Keys under ``s3://<bucket>/<prefix>``: ``blobs/<digest>`` (tensor records), ``checkpoints/<digest>.json``
(manifests), ``tmp/<uuid>`` (large blobs while their digest is unknown). Several replicas share one
bucket. A blob's bytes are hashed while they stream in; a blob of at most :data:`PART_BYTES` is then put
under its final key in one request, a larger one is uploaded in parts to a temporary key and copied to its
final key on the object store's side (memory: one part per upload in flight). An object whose key exists
is never written again. Reads: :meth:`read_all` (derive) and whole-object reads verify the sha256 against
the key; a ranged read trusts the object store's own integrity checks (it cannot hash a part of a
record), and a whole read that fails verification ends the response early and raises BlobCorrupt.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

from .base import READ_CHUNK, BlobCorrupt, StoreError, sha256_hex

PART_BYTES = 8 << 20  # S3's minimum part is 5 MiB


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


class S3Store:
    """See the module docstring. ``client`` is a boto3 S3 client (tests and callers may pass their own)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        create_bucket: bool = True,
    ) -> None:
        if client is None:
            import boto3  # imported only when an S3 store is configured
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                region_name=region or None,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
            )
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.description = f"s3://{bucket}/{self.prefix}"
        if create_bucket:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not _is_missing(exc):
                raise StoreError(f"cannot reach bucket {self.bucket!r}: {exc}") from exc
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as create_exc:
                code = str(create_exc.response.get("Error", {}).get("Code", ""))
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise StoreError(f"cannot create bucket {self.bucket!r}: {create_exc}") from create_exc

    def key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}/{name}"

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise StoreError(f"HEAD {key}: {exc}") from exc
        return head

    # -- writing ------------------------------------------------------------------------------------
    def writer(self) -> S3BlobWriter:
        return S3BlobWriter(self)

    def put_manifest(self, digest: str, body: bytes) -> bool:
        key = self.key("checkpoints", f"{digest}.json")
        if self._head(key) is not None:
            return False
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        return True

    # -- reading ------------------------------------------------------------------------------------
    def get_manifest(self, digest: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key("checkpoints", f"{digest}.json"))
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise StoreError(f"GET manifest {digest}: {exc}") from exc
        body: bytes = response["Body"].read()
        return body

    def blob_length(self, digest: str) -> int | None:
        head = self._head(self.key("blobs", digest))
        return None if head is None else int(head["ContentLength"])

    def read(self, digest: str, start: int, stop: int) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        if stop <= start:
            return
        length = self.blob_length(digest)
        if length is None:
            raise StoreError(f"blob {digest} is missing from {self.description}")
        whole = start == 0 and stop == length
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.key("blobs", digest), Range=f"bytes={start}-{stop - 1}"
            )
        except ClientError as exc:
            raise StoreError(f"GET blob {digest}: {exc}") from exc
        hasher = hashlib.sha256() if whole else None
        received = 0
        for chunk in response["Body"].iter_chunks(READ_CHUNK):
            if hasher is not None:
                hasher.update(chunk)
            received += len(chunk)
            yield chunk
        if received != stop - start:
            raise StoreError(f"blob {digest}: got {received} bytes of [{start}, {stop})")
        if hasher is not None and hasher.hexdigest() != digest:
            raise BlobCorrupt(digest)

    def read_all(self, digest: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key("blobs", digest))
        except ClientError as exc:
            if _is_missing(exc):
                raise StoreError(f"blob {digest} is missing from {self.description}") from exc
            raise StoreError(f"GET blob {digest}: {exc}") from exc
        data: bytes = response["Body"].read()
        if sha256_hex(data) != digest:
            raise BlobCorrupt(digest)
        return data


class S3BlobWriter:
    """Small blobs in memory until commit; from :data:`PART_BYTES` on, a multipart upload to ``tmp/``."""

    def __init__(self, store: S3Store) -> None:
        self.store = store
        self._hasher = hashlib.sha256()
        self._buffer = bytearray()
        self._temp_key: str | None = None
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)
        self._buffer += data
        while len(self._buffer) >= PART_BYTES:
            self._send_part(bytes(self._buffer[:PART_BYTES]))
            del self._buffer[:PART_BYTES]

    def _send_part(self, part: bytes) -> None:
        client, bucket = self.store.client, self.store.bucket
        if self._upload_id is None:
            self._temp_key = self.store.key("tmp", uuid.uuid4().hex)
            self._upload_id = client.create_multipart_upload(Bucket=bucket, Key=self._temp_key)["UploadId"]
        number = len(self._parts) + 1
        etag = client.upload_part(
            Bucket=bucket, Key=self._temp_key, UploadId=self._upload_id, PartNumber=number, Body=part
        )["ETag"]
        self._parts.append({"ETag": etag, "PartNumber": number})

    def commit(self) -> tuple[str, bool]:
        digest = self._hasher.hexdigest()
        client, bucket = self.store.client, self.store.bucket
        final = self.store.key("blobs", digest)
        if self.store._head(final) is not None:
            self.abort()
            return digest, False
        if self._upload_id is None:
            client.put_object(Bucket=bucket, Key=final, Body=bytes(self._buffer))
            self._buffer.clear()
            return digest, True
        if self._buffer:
            self._send_part(bytes(self._buffer))
            self._buffer.clear()
        client.complete_multipart_upload(
            Bucket=bucket, Key=self._temp_key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
        )
        self._upload_id = None
        try:
            # A managed copy: one CopyObject, or UploadPartCopy parts above 5 GiB, on the object store's side.
            client.copy({"Bucket": bucket, "Key": self._temp_key}, bucket, final)
        finally:
            client.delete_object(Bucket=bucket, Key=self._temp_key)
        return digest, True

    def abort(self) -> None:
        self._buffer.clear()
        if self._upload_id is not None:
            try:
                self.store.client.abort_multipart_upload(
                    Bucket=self.store.bucket, Key=self._temp_key, UploadId=self._upload_id
                )
            finally:
                self._upload_id = None
