"""Content-addressed blob stores: drivers behind one small interface (``base.py``), wrapped once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubproxy.store.instrumented import InstrumentedStore

if TYPE_CHECKING:
    from hubproxy.config import Settings
    from hubproxy.store.base import BlobStore


def make_store(settings: Settings, folder: str = "blobs") -> BlobStore:
    """The store the settings ask for (boto3 is only imported for S3); ``folder``: its namespace (``blobs``
    for files, ``xorbs`` for Xet xorbs)."""
    if settings.store == "s3":
        try:
            from hubproxy.store.s3 import S3BlobStore
        except ImportError:
            from hubproxy.config import ConfigError

            raise ConfigError("setting 'store': s3 needs the 's3' extra: pip install 'hubproxy[s3]'") from None

        return InstrumentedStore(S3BlobStore(settings, folder), "s3")
    from hubproxy.store.local import LocalBlobStore

    return InstrumentedStore(LocalBlobStore(settings.data_dir, folder), "local")
