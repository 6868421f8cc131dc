"""The Syncer: a Backend's keys under some prefixes, as an ordered stream of updates.

A Syncer keeps its consumer's copy of the datastore right, across anything etcd does:

1. List every prefix at one revision R (the first list picks R; the others are pinned to it),
   emit the snapshot as `Update`s in batches, then the status `IN_SYNC`.
2. Watch each prefix from R+1 and emit each change as it comes (consecutive watch responses
   are coalesced into one callback, up to `batch_size` updates).
3. When etcd goes away, retry with capped, jittered exponential backoff, and resume each watch
   from the last revision it delivered: etcd replays what happened meanwhile, so nothing is
   lost and nothing is re-sent.
4. When that history has been compacted (`Compacted`), or the store's revision went backwards
   (a restore from backup), do a full resync: relist, and emit only the *difference* from
   what the consumer already has (updates for new or changed keys, deletes for keys that are
   gone), then `IN_SYNC` again.

Order: each key's updates arrive in revision order, and so do all updates under one prefix.
Across prefixes, watch responses are interleaved as they arrive (one watch per prefix), so
two keys under different prefixes may be reported out of global revision order.

The Syncer remembers, per key, the mod revision it last emitted (not the value), so the resync
diff is cheap and an update is never emitted twice for the same (key, revision); a delete is
only emitted for a key the consumer has. A delete found by a resync carries the resync's
revision R, since etcd no longer knows when it happened.

Statuses (Calico's `api.SyncStatus`): `WAIT_FOR_DATASTORE` until the first list succeeds,
`RESYNC` while a snapshot or resync diff is being emitted, then `IN_SYNC`. Losing the
connection later does not change the status (the consumer's copy is still the best there is;
Calico behaves the same). Consumers must treat `IN_SYNC` as idempotent.

Callbacks run on the Syncer's own thread, one call at a time. A callback that raises stops the
Syncer (the exception is kept in `error` and logged): a consumer whose copy is broken must not
be fed more updates.
"""

from __future__ import annotations

import enum
import logging
import queue
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tortie.datastore.backend import KV, Backend, Compacted, EventType, Watcher, WatchEvent

__all__ = ["SyncStatus", "Syncer", "SyncerCallbacks", "Update"]

log = logging.getLogger(__name__)


class SyncStatus(enum.Enum):
    WAIT_FOR_DATASTORE = "wait-for-datastore"
    RESYNC = "resync"
    IN_SYNC = "in-sync"


@dataclass(frozen=True, slots=True)
class Update:
    """A key's new value (`None` when deleted) and the revision of that change."""

    key: str
    value: bytes | None
    revision: int


class SyncerCallbacks(Protocol):
    def on_status(self, status: SyncStatus) -> None: ...

    def on_updates(self, updates: list[Update]) -> None: ...


class _Stopped(Exception):
    pass


class _CallbackFailed(Exception):
    pass


class _Backoff:
    """Exponential backoff with a cap and jitter (each delay is 50-100% of the nominal one)."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._nominal = initial

    def reset(self) -> None:
        self._nominal = self.initial

    def next(self) -> float:
        delay = self._nominal * random.uniform(0.5, 1.0)
        self._nominal = min(self._nominal * 2, self.maximum)
        return delay


def _minimal_prefixes(prefixes: Sequence[str]) -> list[str]:
    """Drop prefixes covered by another one, so no key is listed or watched twice."""
    out: list[str] = []
    for p in sorted(set(prefixes)):
        if not any(p.startswith(q) for q in out):
            out.append(p)
    return out


_END = object()


class Syncer:
    """Lists and watches `prefixes` of `backend` on its own thread (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        prefixes: Sequence[str],
        callbacks: SyncerCallbacks,
        *,
        batch_size: int = 1000,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        name: str = "syncer",
    ) -> None:
        if not prefixes:
            raise ValueError("a Syncer needs at least one prefix")
        self.backend = backend
        self.prefixes = _minimal_prefixes(prefixes)
        self.callbacks = callbacks
        self.batch_size = batch_size
        self.name = name
        self._backoff = _Backoff(backoff_initial, backoff_max)
        self._state: dict[str, int] = {}  # key -> mod revision last emitted
        self._progress = [0] * len(self.prefixes)  # per prefix: complete up to this revision
        self._status: SyncStatus | None = None
        self._stop = threading.Event()
        self._in_sync = threading.Event()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] | None = None
        self._watchers: list[Watcher] = []
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        # Counters, for tests and metrics.
        self.resyncs = 0
        self.reconnects = 0

    # -- public --------------------------------------------------------------------------------

    @property
    def status(self) -> SyncStatus | None:
        return self._status

    @property
    def revision(self) -> int:
        """The revision up to which every prefix has been delivered."""
        return min(self._progress)

    def start(self) -> Syncer:
        if self._thread is not None:
            raise RuntimeError("Syncer already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def wait_in_sync(self, timeout: float | None = None) -> bool:
        """Block until the first IN_SYNC (True) or the timeout (False)."""
        return self._in_sync.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for it; safe to call twice or before start()."""
        self._stop.set()
        with self._lock:
            q = self._queue
            watchers = list(self._watchers)
        if q is not None:
            q.put(_END)
        for w in watchers:
            w.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: thread did not stop within %.1fs", self.name, timeout)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._set_status(SyncStatus.WAIT_FOR_DATASTORE)
            need_resync = True
            while not self._stop.is_set():
                try:
                    if need_resync:
                        self._resync()
                        need_resync = False
                        self._backoff.reset()
                    self._watch()
                except Compacted as e:
                    log.info("%s: watch history compacted (%s); resyncing", self.name, e)
                    need_resync = True
                except (_Stopped, _CallbackFailed):
                    raise
                except Exception as e:
                    if self._stop.is_set():
                        break
                    delay = self._backoff.next()
                    log.warning("%s: %s; retrying in %.2fs", self.name, e, delay)
                    self.reconnects += 1
                    self._stop.wait(delay)
        except _Stopped:
            pass
        except _CallbackFailed as e:
            self.error = e.__cause__
            log.error("%s: a callback failed, stopping: %r", self.name, e.__cause__)
        except BaseException as e:  # pragma: no cover - a bug in the syncer itself
            self.error = e
            log.exception("%s: crashed", self.name)
        finally:
            log.debug("%s: stopped", self.name)

    def _call(self, fn: Callable[..., None], arg: object) -> None:
        if self._stop.is_set():
            raise _Stopped
        try:
            fn(arg)
        except Exception as e:
            raise _CallbackFailed from e

    def _set_status(self, status: SyncStatus) -> None:
        if status is self._status:
            return
        self._status = status
        log.debug("%s: status %s", self.name, status.value)
        self._call(self.callbacks.on_status, status)
        if status is SyncStatus.IN_SYNC:
            self._in_sync.set()

    def _emit(self, updates: list[Update]) -> None:
        for i in range(0, len(updates), self.batch_size):
            self._call(self.callbacks.on_updates, updates[i : i + self.batch_size])

    # -- snapshot and resync -------------------------------------------------------------------

    def _list_all(self) -> tuple[list[KV], int]:
        """Every key under every prefix, at one revision."""
        while True:
            kvs, rev = self.backend.list(self.prefixes[0])
            try:
                for prefix in self.prefixes[1:]:
                    more, _ = self.backend.list(prefix, rev)
                    kvs.extend(more)
            except Compacted:
                # Compacted between our pages: take a fresh snapshot.
                log.info("%s: snapshot revision %d compacted while listing; relisting",
                         self.name, rev)
                continue
            return kvs, rev

    def _resync(self) -> None:
        kvs, rev = self._list_all()
        if self._stop.is_set():
            raise _Stopped
        first = self.resyncs == 0
        self.resyncs += 1
        self._set_status(SyncStatus.RESYNC)
        state = self._state
        updates: list[Update] = []
        seen: set[str] = set()
        for kv in kvs:
            seen.add(kv.key)
            if state.get(kv.key) != kv.mod_revision:
                state[kv.key] = kv.mod_revision
                updates.append(Update(kv.key, kv.value, kv.mod_revision))
        for key in [k for k in state if k not in seen]:
            del state[key]
            updates.append(Update(key, None, rev))
        self._emit(updates)
        self._progress = [rev] * len(self.prefixes)
        log.info("%s: %s at revision %d: %d keys, %d updates emitted", self.name,
                 "snapshot" if first else "resync", rev, len(kvs), len(updates))
        self._set_status(SyncStatus.IN_SYNC)

    # -- watching ------------------------------------------------------------------------------

    def _pump(self, idx: int, watcher: Watcher, q: queue.SimpleQueue[Any]) -> None:
        try:
            for batch in watcher:
                q.put((idx, batch, watcher.revision))
            q.put((idx, None, 0))  # the watch ended (closed)
        except BaseException as e:
            q.put((idx, e, 0))

    def _watch(self) -> None:
        if self.resyncs and max(self._progress) > 0:
            current = self.backend.current_revision()
            if current < max(self._progress):
                log.warning("%s: datastore revision went back from %d to %d (restored?); "
                            "resyncing", self.name, max(self._progress), current)
                raise Compacted(None, "datastore revision went backwards")
        q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        watchers: list[Watcher] = []
        pumps: list[threading.Thread] = []
        with self._lock:
            self._queue = q
        try:
            for idx, prefix in enumerate(self.prefixes):
                w = self.backend.watch(prefix, self._progress[idx] + 1)
                watchers.append(w)
                with self._lock:
                    self._watchers = list(watchers)
                if self._stop.is_set():
                    raise _Stopped
            for idx, w in enumerate(watchers):
                t = threading.Thread(target=self._pump, args=(idx, w, q),
                                     name=f"{self.name}-watch-{idx}", daemon=True)
                t.start()
                pumps.append(t)
            self._backoff.reset()
            while True:
                self._handle(q)
        finally:
            with self._lock:
                self._queue = None
                self._watchers = []
            for w in watchers:
                w.close()
            for t in pumps:
                t.join(5.0)

    def _handle(self, q: queue.SimpleQueue[Any]) -> None:
        """Wait for watch output, coalesce what is queued, apply it and emit the updates."""
        item = q.get()
        updates: list[Update] = []
        progress: dict[int, int] = {}
        while True:
            if item is _END:
                raise _Stopped
            idx, payload, rev = item
            if payload is None:
                if self._stop.is_set():
                    raise _Stopped
                payload = RuntimeError(f"watch on {self.prefixes[idx]!r} ended")
            if isinstance(payload, BaseException):
                # Deliver what came before the failure, then let _run deal with it.
                self._commit(updates, progress)
                raise payload
            self._apply(payload, updates)
            progress[idx] = max(progress.get(idx, 0), rev)
            if len(updates) >= self.batch_size:
                break
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
        self._commit(updates, progress)

    def _apply(self, batch: list[WatchEvent], out: list[Update]) -> None:
        state = self._state
        for ev in batch:
            kv = ev.kv
            rev = kv.mod_revision
            known = state.get(kv.key)
            if ev.type is EventType.PUT:
                if known is not None and rev <= known:
                    continue  # already delivered
                state[kv.key] = rev
                out.append(Update(kv.key, kv.value, rev))
            else:
                if known is None or rev <= known:
                    continue  # the consumer never had it, or it was re-created since
                del state[kv.key]
                out.append(Update(kv.key, None, rev))

    def _commit(self, updates: list[Update], progress: dict[int, int]) -> None:
        if updates:
            self._emit(updates)
        for idx, rev in progress.items():
            if rev > self._progress[idx]:
                self._progress[idx] = rev
