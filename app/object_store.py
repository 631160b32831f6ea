"""The deployment's object store, built from the settings (`object_store(settings)`): the local directory by
default, an S3-compatible server when `MIDOG_OBJECT_STORE=s3`. Must not import FastAPI: the workers and the
CLI open it too."""

from __future__ import annotations

from app.settings import Settings
from worker.objects import ObjectStore
from worker.objects.configured import open_store


def object_store(settings: Settings) -> ObjectStore:
    """A new client of the configured store (cheap for `local`; one boto3 client for `s3`)."""
    assert settings.object_store_dir is not None  # set by the settings' validation
    return open_store(
        settings.object_store,
        root=settings.object_store_dir,
        endpoint_url=settings.s3_endpoint_url,
        bucket=settings.s3_bucket,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key.get_secret_value(),
        region=settings.s3_region,
        prefix=settings.s3_prefix,
    )
