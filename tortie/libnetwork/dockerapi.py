"""The few Docker Engine API reads the network driver needs, over Docker's own socket.

Docker does not tell a network driver the network's *name* (only its ID), nor the labels of
the container an endpoint belongs to; Calico's plugin asks the daemon for both, and so does
Tortie: `GET /networks/<id>` (name, and which container holds which endpoint once it has
joined) and `GET /containers/<id>/json` (labels). Every call has a timeout; a daemon that
does not answer is a `DockerAPIError`, never a hang.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = ["DockerAPI", "DockerAPIError", "DockerNotFound"]


class DockerAPIError(Exception):
    """The Docker daemon could not be reached or answered with an error."""


class DockerNotFound(DockerAPIError):
    """The daemon answered 404: no such network or container (yet)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DockerAPI:
    """A minimal client: `DockerAPI("unix:///var/run/docker.sock").network(id)`."""

    def __init__(self, host: str, timeout: float = 5.0) -> None:
        url = urlsplit(host)
        if url.scheme == "unix":
            self._path: str | None = url.path
            self._addr = ("", 0)
        elif url.scheme in ("tcp", "http"):
            self._path = None
            self._addr = (url.hostname or "127.0.0.1", url.port or 2375)
        else:
            raise DockerAPIError(
                f"DOCKER_HOST={host!r}: use unix:///path/to/docker.sock or tcp://host:port"
            )
        self.host = host
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self._path is not None:
            return _UnixConnection(self._path, self.timeout)
        return http.client.HTTPConnection(*self._addr, timeout=self.timeout)

    def get(self, path: str) -> Any:
        """GET `path` and decode the JSON answer; DockerNotFound on 404."""
        conn = self._connection()
        try:
            conn.request("GET", path, headers={"Host": "docker"})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DockerAPIError(f"cannot reach the Docker daemon at {self.host}: {exc}") from None
        finally:
            conn.close()
        if resp.status == 404:
            raise DockerNotFound(_message(body) or f"{path}: not found")
        if resp.status != 200:
            raise DockerAPIError(f"Docker daemon answered {resp.status} to GET {path}: "
                                 f"{_message(body)}")
        try:
            return json.loads(body)
        except ValueError:
            raise DockerAPIError(f"Docker daemon sent something that is not JSON for {path}") \
                from None

    def network(self, network_id: str) -> dict[str, Any]:
        """`docker network inspect`: Name, Containers (container ID -> EndpointID, ...)."""
        data = self.get(f"/networks/{quote(network_id, safe='')}")
        if not isinstance(data, dict):
            raise DockerAPIError(f"unexpected answer for network {network_id}")
        return data

    def network_name(self, network_id: str) -> str:
        name = self.network(network_id).get("Name")
        if not isinstance(name, str) or not name:
            raise DockerAPIError(f"Docker reports no name for network {network_id}")
        return name

    def container_labels(self, container_id: str) -> dict[str, str]:
        """The container's labels. The list endpoint answers from Docker's view of its
        containers without waiting for a container that is still starting (inspect waits for
        the start to finish); inspect is the fallback."""
        filters = quote(json.dumps({"id": [container_id]}), safe="")
        found = self.get(f"/containers/json?all=1&filters={filters}")
        for item in found if isinstance(found, list) else []:
            if isinstance(item, dict) and str(item.get("Id", "")).startswith(container_id):
                return {str(k): str(v) for k, v in (item.get("Labels") or {}).items()}
        data = self.get(f"/containers/{quote(container_id, safe='')}/json")
        labels = ((data or {}).get("Config") or {}).get("Labels") or {}
        return {str(k): str(v) for k, v in labels.items()}


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return body.decode(errors="replace").strip()
