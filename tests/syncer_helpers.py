"""A recording Syncer consumer and a Backend wrapper whose watches can be cut, for tests."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from tortie.datastore.backend import KV, Backend, Unavailable, Watcher
from tortie.datastore.syncer import SyncStatus, Update


class Recorder:
    """Rebuilds the datastore from Syncer callbacks and records everything it was told."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: dict[str, bytes] = {}
        self.revisions: dict[str, int] = {}
        self.updates: list[Update] = []
        self.statuses: list[SyncStatus] = []
        self.updates_before_status: list[int] = []  # len(updates) when each status came
        self.bad_deletes: list[Update] = []
        self.calls = 0

    def on_status(self, status: SyncStatus) -> None:
        with self.lock:
            self.statuses.append(status)
            self.updates_before_status.append(len(self.updates))

    def on_updates(self, updates: list[Update]) -> None:
        with self.lock:
            self.calls += 1
            for u in updates:
                self.updates.append(u)
                if u.value is None:
                    if u.key not in self.state:
                        self.bad_deletes.append(u)
                    self.state.pop(u.key, None)
                    self.revisions.pop(u.key, None)
                else:
                    self.state[u.key] = u.value
                    self.revisions[u.key] = u.revision

    def matches(self, kvs: Iterable[KV]) -> bool:
        want = {kv.key: (kv.value, kv.mod_revision) for kv in kvs}
        with self.lock:
            have = {k: (v, self.revisions[k]) for k, v in self.state.items()}
        return have == want

    def assert_clean(self) -> None:
        """Never two updates for the same (key, revision); deletes only for known keys."""
        with self.lock:
            pairs = [(u.key, u.revision) for u in self.updates]
            assert len(pairs) == len(set(pairs)), "a (key, revision) was emitted twice"
            assert not self.bad_deletes, f"deletes of keys never emitted: {self.bad_deletes}"

    def count(self, status: SyncStatus) -> int:
        with self.lock:
            return self.statuses.count(status)


class CuttableBackend:
    """Delegates to a real backend, but `cut()` breaks all watches until `restore()`.

    While cut, open watchers end and new ones fail with Unavailable: the situation of a
    Syncer whose connection is gone while others keep writing to etcd.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._open: list[Watcher] = []
        self.watch_calls = 0

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            open_, self._open = self._open, []
        for w in open_:
            w.close()

    def restore(self) -> None:
        self._cut.clear()

    def watch(self, prefix: str, start_revision: int) -> Watcher:
        self.watch_calls += 1
        if self._cut.is_set():
            raise Unavailable("connection cut by the test")
        w = self.inner.watch(prefix, start_revision)
        with self._lock:
            self._open.append(w)
        return w

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
