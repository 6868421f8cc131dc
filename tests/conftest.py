"""Shared fixtures: a real etcd for the session, backends on it, a memory backend.

- `etcd_server` (session): one private etcd on 127.0.0.1 free ports, fresh data dir in a
  temporary directory, stopped (by PID) and removed at the end, even after failures.
- `etcd_backend` (function): an EtcdBackend on that server; everything under `/calico/` is
  deleted after each test.
- `private_etcd` (function): a server of the test's own, for tests that stop, restart or
  compact etcd.
- `memory_backend` (function): a fresh MemoryBackend.
- `wait_until(predicate, timeout)`: poll a condition against a deadline (no bare sleeps).

Tests that need the real etcd are marked `@pytest.mark.etcd`; they are skipped when there
is no `etcd` binary.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Let test modules import helpers that live next to this file (e.g. backend_contract).
sys.path.insert(0, str(Path(__file__).parent))

from tortie.datastore.etcd import EtcdBackend
from tortie.datastore.memory import MemoryBackend
from tortie.lab.etcd import EtcdServer


def _require_etcd() -> None:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (scripts/setup.sh installs etcd-server)")


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    _require_etcd()
    server = EtcdServer(name="tortie-test")
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def private_etcd() -> Iterator[EtcdServer]:
    _require_etcd()
    server = EtcdServer(name="tortie-private")
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def etcd_backend(etcd_server: EtcdServer) -> Iterator[EtcdBackend]:
    backend = EtcdBackend(etcd_server.endpoint, timeout=10.0)
    try:
        yield backend
    finally:
        try:
            if not etcd_server.running:
                etcd_server.start()
            EtcdBackend(etcd_server.endpoint).delete_prefix("/calico/")
        finally:
            backend.close()


@pytest.fixture
def memory_backend() -> Iterator[MemoryBackend]:
    backend = MemoryBackend()
    yield backend
    backend.close()


def _wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, message: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@pytest.fixture
def wait_until() -> Callable[..., None]:
    return _wait_until
