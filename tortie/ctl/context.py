"""Connecting tortiectl to the datastore (``--config`` file, environment, or defaults)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tortie.datastore.client import ResourceClient


def open_client(config_path: str | None) -> ResourceClient:
    from tortie.datastore.client import ResourceClient
    from tortie.datastore.config import load_config
    from tortie.datastore.etcd import EtcdBackend

    return ResourceClient(EtcdBackend(load_config(config_path)))
