"""`tortie-libnetwork`: the plugin process — two unix-socket HTTP servers, `run()`, `main()`.

One process serves both drivers, each on its own socket in Docker's plugin directory (a
driver's name is its socket's name, as with Calico's `calico.sock` and `calico-ipam.sock`):
`<plugin dir>/tortie.sock` answers `Plugin.Activate` with `["NetworkDriver"]` and the
`NetworkDriver.*` calls, `<plugin dir>/tortie-ipam.sock` with `["IpamDriver"]` and the
`IpamDriver.*` calls. Requests are handled by a small pool of threads (so each keeps its
etcd connection) with a read timeout on every connection; responses close the connection.

    tortie-libnetwork [--plugin-dir DIR] [--docker-host URL] [--nodename NAME]

`run(config)` is the entry point tortie-node calls (or runs as a process); it serves until
SIGTERM/SIGINT (or `stop()` from another thread) and removes its sockets on the way out.
Logging is quiet: one line per network, endpoint and address; every request and response
at debug level (`TORTIE_LIBNETWORK_LOGLEVEL=debug`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from typing import Any

from tortie.libnetwork.config import ConfigError, LibnetworkConfig
from tortie.libnetwork.protocol import CONTENT_TYPE, DriverError

__all__ = ["PluginServer", "main", "run"]

log = logging.getLogger("tortie.libnetwork")

Handler = Callable[[Mapping[str, Any]], Mapping[str, Any]]
REQUEST_TIMEOUT = 30.0


class _RequestHandler(BaseHTTPRequestHandler):
    server: PluginServer
    protocol_version = "HTTP/1.0"
    timeout = REQUEST_TIMEOUT

    def do_POST(self) -> None:
        method = self.path.lstrip("/")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, OSError) as exc:
            self._reply(400, {"Err": f"malformed request: {exc}"})
            return
        if not isinstance(body, dict):
            self._reply(400, {"Err": "malformed request: the body must be a JSON object"})
            return
        status, resp = self.server.dispatch(method, body)
        self._reply(status, resp)

    def do_GET(self) -> None:
        self._reply(405, {"Err": "use POST"})

    def _reply(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError as exc:
            log.debug("client went away: %s", exc)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class PluginServer(socketserver.UnixStreamServer):
    """An HTTP server on one plugin socket, dispatching `POST /<Method>` to handlers."""

    def __init__(
        self,
        path: str,
        implements: list[str],
        handlers: Mapping[str, Handler],
        pool: ThreadPoolExecutor,
    ) -> None:
        self.implements = implements
        self.handlers = dict(handlers)
        self._pool = pool
        if os.path.exists(path) or os.path.islink(path):
            _remove_stale_socket(path)
        super().__init__(path, _RequestHandler)
        os.chmod(path, 0o660)
        self.path = path

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, _ = self.socket.accept()
        return sock, ("plugin-client", 0)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._pool.submit(self._handle, request, client_address)

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            log.exception("error handling a request")
        finally:
            self.shutdown_request(request)

    def dispatch(self, method: str, body: Mapping[str, Any]) -> tuple[int, Mapping[str, Any]]:
        log.debug("%s %s", method, json.dumps(body))
        if method == "Plugin.Activate":
            return 200, {"Implements": self.implements}
        handler = self.handlers.get(method)
        if handler is None:
            # Docker treats an unknown method as "not implemented"; say so plainly.
            return 404, {"Err": f"{method} is not implemented by this plugin"}
        try:
            resp = handler(body)
        except DriverError as exc:
            log.warning("%s: %s", method, exc)
            return 500, {"Err": str(exc)}
        except Exception as exc:
            log.exception("%s failed", method)
            return 500, {"Err": f"internal error in the Tortie driver: {exc}"}
        log.debug("%s -> %s", method, json.dumps(resp))
        return 200, resp

    def server_close(self) -> None:
        super().server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _remove_stale_socket(path: str) -> None:
    """A socket file nobody listens on (a previous run) is removed; a live one is an error."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise ConfigError(f"{path} is in use by another plugin process: stop it first")


class Plugin:
    """The running plugin: datastore, IPAM, both drivers and both servers."""

    def __init__(self, config: LibnetworkConfig, backend: Any | None = None) -> None:
        from tortie.datastore.client import ResourceClient
        from tortie.ipam import IPAMClient
        from tortie.libnetwork.ipam import IpamDriver
        from tortie.libnetwork.network import NetworkDriver

        self.config = config
        self._own_backend = backend is None
        if backend is None:
            from tortie.datastore.config import load_config
            from tortie.datastore.etcd import EtcdBackend

            backend = EtcdBackend(config.datastore or load_config(None))
        self.backend = backend
        self.resources = ResourceClient(backend)
        self.ipam = IPAMClient(backend, self.resources, watch=True)
        self.network = NetworkDriver(config, self.resources)
        self.ipam_driver = IpamDriver(self.ipam, config.nodename)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="libnetwork")
        self.servers: list[PluginServer] = []
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self._done = threading.Event()
        self._stop_lock = threading.Lock()

    def start(self) -> Plugin:
        os.makedirs(self.config.plugin_dir, exist_ok=True)
        try:
            for path, implements, handlers in (
                (self.config.network_socket, ["NetworkDriver"], self.network.handlers()),
                (self.config.ipam_socket, ["IpamDriver"], self.ipam_driver.handlers()),
            ):
                self.servers.append(PluginServer(path, implements, handlers, self._pool))
        except BaseException:
            self.stop()
            raise
        for srv in self.servers:
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                 name=f"serve-{os.path.basename(srv.path)}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("tortie-libnetwork serving %s and %s for node %s",
                 self.config.network_socket, self.config.ipam_socket, self.config.nodename)
        return self

    def wait(self) -> None:
        while not self._stopped.wait(1.0):
            pass

    def stop(self) -> None:
        """Stop serving, remove the sockets, close the datastore; a second caller (signal
        handler and main thread) returns once the first has finished."""
        with self._stop_lock:
            first = not self._stopped.is_set()
            self._stopped.set()
        if not first:
            self._done.wait(30.0)
            return
        try:
            self._shutdown()
        finally:
            self._done.set()

    def _shutdown(self) -> None:
        for srv in self.servers:
            if self._threads:  # serve_forever is running: stop it (shutdown waits for it)
                srv.shutdown()
            srv.server_close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.network.close()
        self.ipam.close()
        if self._own_backend:
            self.backend.close()


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(
        "%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
    root = logging.getLogger("tortie")
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    root.propagate = False


def run(
    config: LibnetworkConfig,
    *,
    configure_logging: bool = True,
    stop: threading.Event | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT (main thread) or until `stop` is set; 0 on a clean stop,
    1 if the plugin could not start. `configure_logging=False` leaves the `tortie` logger as
    the caller set it up (for running inside another process)."""
    if configure_logging:
        setup_logging(config.log_level)
    try:
        plugin = Plugin(config).start()
    except (ConfigError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: threading.Thread(target=plugin.stop).start())
    if stop is not None:
        threading.Thread(target=lambda: (stop.wait(), plugin.stop()), daemon=True,
                         name="libnetwork-stop").start()
    try:
        plugin.wait()
    finally:
        plugin.stop()
    log.info("tortie-libnetwork stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tortie-libnetwork",
        description="Docker remote network driver (tortie) and IPAM driver (tortie-ipam).",
    )
    parser.add_argument("--plugin-dir", help="directory for the plugin sockets "
                        "(default $TORTIE_LIBNETWORK_PLUGIN_DIR or /run/docker/plugins)")
    parser.add_argument("--network-driver", help="network driver name (default tortie)")
    parser.add_argument("--ipam-driver", help="IPAM driver name (default tortie-ipam)")
    parser.add_argument("--docker-host", help="Docker daemon (default $DOCKER_HOST or "
                        "unix:///var/run/docker.sock)")
    parser.add_argument("--nodename", help="this node's name (default $NODENAME, ...)")
    parser.add_argument("--scope", choices=("local", "global"), help="driver scope")
    parser.add_argument("--log-level", help="debug, info, warning or error")
    args = parser.parse_args(argv)
    try:
        config = LibnetworkConfig.from_env(
            plugin_dir=args.plugin_dir,
            network_driver=args.network_driver,
            ipam_driver=args.ipam_driver,
            docker_host=args.docker_host,
            nodename=args.nodename,
            scope=args.scope,
            log_level=args.log_level,
        )
    except ConfigError as exc:
        sys.stderr.write(f"tortie-libnetwork: configuration error: {exc}\n")
        return 2
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
