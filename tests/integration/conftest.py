"""Fixtures for the dataplane integration tests: throwaway network namespaces (root needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tortie.felix.dataplane.netns import netns_unavailable_reason, temp_netns


def _need_netns() -> None:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def ns() -> Iterator[str]:
    """One fresh namespace, deleted afterwards even if the test fails."""
    _need_netns()
    with temp_netns("tdp") as name:
        yield name


@pytest.fixture
def nss() -> Iterator[tuple[str, str]]:
    """Two fresh namespaces: a node and a workload."""
    _need_netns()
    with temp_netns("tdp") as node, temp_netns("tdp") as wl:
        yield node, wl
