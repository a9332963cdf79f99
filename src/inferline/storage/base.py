"""The storage interface and the scheme registry.

Each back end turns a URI into a local path the runtime can open. Built in: local files (plain
paths and `file://`) and the example models (`example://`); remote back ends (`s3://`, `gs://`,
`http(s)://`) register themselves for their scheme.
"""

from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from inferline.protocol.errors import InvalidModelURI


class Storage(Protocol):
    def fetch(self, uri: str, base: Path | None) -> Path:
        """Return a local path holding the artifact at `uri`; relative URIs start at `base`."""
        ...


_BACKENDS: dict[str, Storage] = {}


def register_storage(scheme: str, storage: Storage) -> None:
    _BACKENDS[scheme] = storage


def fetch(uri: str, base: Path | None = None) -> Path:
    if not uri or not uri.strip():
        raise InvalidModelURI("model URI is empty")
    scheme = urlparse(uri).scheme
    # A one-letter scheme is a Windows drive letter, not a URI scheme.
    if len(scheme) <= 1:
        scheme = "file"
    storage = _BACKENDS.get(scheme)
    if storage is None:
        raise InvalidModelURI(
            f"no storage back end for '{scheme}://' in model URI '{uri}' "
            f"(available: {', '.join(sorted(_BACKENDS))})"
        )
    return storage.fetch(uri, base)


def _register_builtins() -> None:
    from inferline.storage.examples import ExampleStorage
    from inferline.storage.http import HTTPStorage
    from inferline.storage.local import LocalStorage
    from inferline.storage.remote import GCSStorage, S3Storage

    register_storage("file", LocalStorage())
    register_storage("example", ExampleStorage())
    # The remote back ends import their client libraries (s3fs, gcsfs) only when first used.
    register_storage("s3", S3Storage())
    register_storage("gs", GCSStorage())
    register_storage("gcs", GCSStorage())
    web = HTTPStorage()
    register_storage("http", web)
    register_storage("https", web)


_register_builtins()
