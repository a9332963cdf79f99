"""Where model artifacts come from: a URI in, a local path out."""

from inferline.storage.base import Storage, fetch, register_storage

__all__ = ["Storage", "fetch", "register_storage"]
