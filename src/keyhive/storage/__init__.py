"""Storage backends: a small ordered key-value interface with atomic, durable commits."""

from keyhive.storage.base import Conflict, Storage, StorageUnavailable, open_storage

__all__ = ["Conflict", "Storage", "StorageUnavailable", "open_storage"]
