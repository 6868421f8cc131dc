"""The datastore layer: the Backend protocol, the etcd v3 and memory backends, the key layout,
client configuration and the Syncer.

Importing this package is cheap (no YAML, no HTTP client): it only re-exports the plain data and
errors of `tortie.datastore.backend`. Import `tortie.datastore.etcd`, `.memory`, `.config`,
`.keys` or `.syncer` for the rest.
"""

from tortie.datastore.backend import (
    KV,
    AuthError,
    Backend,
    Compacted,
    DatastoreError,
    EventType,
    KeyExists,
    KeyNotFound,
    RevisionConflict,
    Unavailable,
    Watcher,
    WatchEvent,
)

__all__ = [
    "KV",
    "AuthError",
    "Backend",
    "Compacted",
    "DatastoreError",
    "EventType",
    "KeyExists",
    "KeyNotFound",
    "RevisionConflict",
    "Unavailable",
    "WatchEvent",
    "Watcher",
]
