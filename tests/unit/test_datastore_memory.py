"""MemoryBackend: the Backend contract, history snapshots checked against a model, and the
test switches (unavailable) that other components' unit tests rely on."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from backend_contract import BackendContract, collect
from hypothesis import given, settings
from hypothesis import strategies as st

from tortie.datastore.backend import (
    Compacted,
    Compare,
    Delete,
    Put,
    Unavailable,
    prefix_range_end,
)
from tortie.datastore.memory import MemoryBackend


@pytest.fixture
def backend(memory_backend: MemoryBackend) -> Iterator[MemoryBackend]:
    yield memory_backend


class TestMemoryBackendContract(BackendContract):
    pass


def test_prefix_range_end() -> None:
    assert prefix_range_end(b"/calico/") == b"/calico0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"
    assert prefix_range_end(b"") == b"\0"


def test_put_many_is_one_revision_and_rejects_duplicates(memory_backend: MemoryBackend) -> None:
    rev = memory_backend.put_many([("/k/a", b"1"), ("/k/b", b"2")])
    assert memory_backend.current_revision() == rev
    with pytest.raises(Exception, match="duplicate"):
        memory_backend.put_many([("/k/a", b"1"), ("/k/a", b"2")])


def test_unavailable_switch_fails_calls_and_watches(memory_backend: MemoryBackend) -> None:
    watcher = memory_backend.watch("/k/", 0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in watcher:
                pass
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    with memory_backend._cond:
        memory_backend.unavailable = True
        memory_backend._cond.notify_all()
    t.join(5)
    assert errors and isinstance(errors[0], Unavailable)
    with pytest.raises(Unavailable):
        memory_backend.get("/k/a")
    memory_backend.unavailable = False
    memory_backend.put("/k/a", b"1")


def test_watch_groups_a_transaction_into_one_batch(memory_backend: MemoryBackend) -> None:
    watcher = memory_backend.watch("/k/", 0)
    try:
        memory_backend.put_many([("/k/a", b"1"), ("/k/b", b"2"), ("/x", b"3")])
        batch = next(watcher)
    finally:
        watcher.close()
    assert [e.key for e in batch] == ["/k/a", "/k/b"]


def test_txn_fails_when_unavailable_and_validates_its_input(
    memory_backend: MemoryBackend,
) -> None:
    memory_backend.unavailable = True
    with pytest.raises(Unavailable):
        memory_backend.txn([], [Put("/k/a", b"1")])
    memory_backend.unavailable = False
    with pytest.raises(ValueError, match="negative"):
        Compare("/k/a", -1)
    with pytest.raises(TypeError, match="not a txn operation"):
        memory_backend.txn([], [("/k/a", b"1")])  # type: ignore[list-item]
    assert memory_backend.current_revision() == 1


def test_old_revisions_list_across_a_txn(memory_backend: MemoryBackend) -> None:
    memory_backend.put_many([("/k/a", b"1"), ("/k/b", b"1")])
    before = memory_backend.current_revision()
    res = memory_backend.txn(
        [Compare.exists("/k/a")], [Put("/k/a", b"2"), Delete("/k/b"), Put("/k/c", b"1")]
    )
    assert res.succeeded and res.revision == before + 1
    old, _ = memory_backend.list("/k/", before)
    assert [(kv.key, kv.value) for kv in old] == [("/k/a", b"1"), ("/k/b", b"1")]
    new, _ = memory_backend.list("/k/", res.revision)
    assert [(kv.key, kv.value) for kv in new] == [("/k/a", b"2"), ("/k/c", b"1")]


def test_watcher_raises_compacted_when_history_is_compacted_under_it(
    memory_backend: MemoryBackend,
) -> None:
    memory_backend.put("/k/a", b"1")
    watcher = memory_backend.watch("/k/", 1)
    memory_backend.put("/k/a", b"2")
    memory_backend.compact(memory_backend.current_revision())
    with pytest.raises(Compacted):
        next(watcher)


def test_close_ends_open_watchers(memory_backend: MemoryBackend) -> None:
    watcher = memory_backend.watch("/k/", 0)
    memory_backend.put("/k/a", b"1")
    assert len(collect(watcher, 1)) == 1
    memory_backend.close()
    with pytest.raises(StopIteration):
        next(watcher)


_ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "delete", "delete_prefix", "put_many", "txn"]),
        st.sampled_from(["/p/a", "/p/b", "/p/c/d", "/q/a"]),
        st.binary(max_size=3),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_every_old_revision_lists_like_a_model(ops: list[tuple[str, str, bytes]]) -> None:
    """After any sequence of writes, list(prefix, r) equals the model's state at r."""
    backend = MemoryBackend()
    model: dict[str, bytes] = {}
    snapshots = {backend.current_revision(): dict(model)}
    for op, key, value in ops:
        if op == "put":
            backend.put(key, value)
            model[key] = value
        elif op == "delete":
            backend.delete(key)
            model.pop(key, None)
        elif op == "delete_prefix":
            prefix = key.rsplit("/", 1)[0] + "/"
            backend.delete_prefix(prefix)
            for k in [k for k in model if k.startswith(prefix)]:
                del model[k]
        elif op == "put_many":
            backend.put_many([(key, value), (key + "x", value)])
            model[key] = model[key + "x"] = value
        else:  # a txn conditioned on the key's current state: put it, delete its sibling
            cur = model.get(key)
            rev = backend.get(key).mod_revision if cur is not None else 0
            res = backend.txn([Compare(key, rev)], [Put(key, value), Delete(key + "x")])
            assert res.succeeded
            model[key] = value
            model.pop(key + "x", None)
        snapshots[backend.current_revision()] = dict(model)
    for rev, state in snapshots.items():
        for prefix in ("/p/", "/q/", "/"):
            kvs, got_rev = backend.list(prefix, rev)
            assert got_rev == rev
            expected = sorted((k, v) for k, v in state.items() if k.startswith(prefix))
            assert [(kv.key, kv.value) for kv in kvs] == expected
    # Watching from the start replays exactly the writes that happened.
    watcher = backend.watch("/", 1)
    if backend.current_revision() > 1:
        replayed: dict[str, bytes] = {}
        while backend.current_revision() > watcher.revision:
            for ev in next(watcher):
                if ev.type.value == "PUT":
                    replayed[ev.key] = ev.kv.value
                else:
                    replayed.pop(ev.key, None)
        assert replayed == model
    watcher.close()
