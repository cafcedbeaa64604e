"""Content-addressed blob stores."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubproxy.config import Settings
    from hubproxy.store.base import BlobStore


def make_store(settings: Settings) -> BlobStore:
    """The store the settings ask for (boto3 is only imported for S3)."""
    if settings.store == "s3":
        from hubproxy.store.s3 import S3BlobStore

        return S3BlobStore(settings)
    from hubproxy.store.local import LocalBlobStore

    return LocalBlobStore(settings.data_dir)
