"""The object store a deployment configured, by kind. Kept apart from the package's interface so that the
interface never imports its implementations (they import it)."""

from __future__ import annotations

from pathlib import Path

from worker.objects import ObjectStore


def open_store(
    kind: str,
    *,
    root: Path | None = None,
    endpoint_url: str = "",
    bucket: str = "",
    access_key: str = "",
    secret_key: str = "",
    region: str = "us-east-1",
    prefix: str = "",
) -> ObjectStore:
    """The store a deployment configured: `local` (needs `root`) or `s3` (needs endpoint, bucket and keys)."""
    if kind == "local":
        if root is None:
            raise ValueError("object store 'local': give the directory (root)")
        from worker.objects.local import LocalStore

        return LocalStore(root)
    if kind == "s3":
        missing = [n for n, v in (("endpoint_url", endpoint_url), ("bucket", bucket)) if not v]
        if missing:
            raise ValueError(f"object store 's3': set {', '.join(missing)}")
        from worker.objects.s3 import S3Store

        return S3Store(
            endpoint_url=endpoint_url,
            bucket=bucket,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            prefix=prefix,
        )
    raise ValueError(f"object store kind {kind!r}: must be 'local' or 's3'")
