"""The node's CNI daemon: runs `tortie` and `tortie-ipam` invocations for the plugin processes.

Why. A runtime starts one plugin process per pod operation, and the budget is ~100 ms per ADD
and ~50 ms per DEL as the runtime sees it. Measured on these machines (2 shared cores; minimum
of repeated `python -X importtime` runs, and wall clock):

- the interpreter (`python -IS -c pass`) starts in 9-10 ms (20+ ms when the machine is busy);
- the plugin's own modules (spec, config, netlink over ctypes, dataplane) import in ~25 ms;
- the datastore client (`http.client` with its email parser: ~20 ms), `tortie.api` (msgspec,
  YAML through the codec, every kind) and `tortie.ipam` bring the total to ~100-140 ms;
- a cold IPAM assignment adds ~45 ms (the IPPool kinds decode lazily, pools, reservations,
  config and affinities are read every time), a warm one ~5 ms;

so an in-process ADD takes 150-250 ms and a DEL about as long: over budget whatever the
plumbing does (the veth, addresses and routes cost ~2 ms over netlink). The daemon imports all
of that once and keeps the etcd connections and the IPAM client warm (pools and config watched
in memory, its last block remembered); the plugin process (`tortie.cni.client`: `os`, `sys`,
`_socket`, ~3 ms) only forwards its environment and stdin over a unix socket and prints the
answer. ADD and DEL then take 25-35 ms end to end (medians; `bench/bench_cni.py` prints both
paths and the interpreter baseline side by side), about 10-15 ms of it in the daemon.

How. `tortie-cni daemon` runs in the node's network namespace (tortie-node will start it)
and listens on the abstract socket `@tortie-cni` of that namespace, so the plugins of this node
find it and no other node's can. Each connection is served by a worker thread (a pool, so that
datastore connections are reused) with `tortie.cni.plugin.run` and one shared `Context`; the
veth work enters the container's namespace per thread (setns), so concurrent ADDs do not
disturb each other. Only root may use it (SO_PEERCRED): the socket is reachable by anything in
the host namespace, host-network pods included.

Safety: after every request the worker checks that its thread is back in the daemon's own
network namespace; if it is not (a setns that could not be undone), the daemon exits at once
rather than wire the next pod from the wrong namespace. With the daemon gone, plugins run
in-process, so pods still start, only slower.

    tortie-cni daemon [--socket NAME] [--workers 32] [--log-file PATH] [--log-level info]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tortie.cni.client import DEFAULT_SOCKET, decode_request, socket_address
from tortie.cni.plugin import PLUGINS, Context, run

__all__ = ["CNIDaemon", "main"]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


class CNIDaemon:
    """Serve plugin invocations on a unix socket until `stop()`."""

    def __init__(self, name: str = DEFAULT_SOCKET, *, workers: int = 32,
                 log_file: str | None = None, log_level: str = "info") -> None:
        self.name = name
        self.address = socket_address(name)
        self.level = _LEVELS.get(log_level, 20)
        self._log_fh = open(log_file, "a") if log_file else sys.stderr  # noqa: SIM115
        self._log_lock = threading.Lock()
        self.ctx = Context(long_lived=True, sink=self._sink)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tortie-cni")
        self._netns = _netns_inode()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self.served = 0

    # --- logging ------------------------------------------------------------------------------
    def _sink(self, level: int, line: str) -> None:
        with self._log_lock:
            self._log_fh.write(line)
            self._log_fh.flush()

    def log(self, level: int, msg: str) -> None:
        if level >= self.level:
            self._sink(level, f"{time.strftime('%Y-%m-%d %H:%M:%S')} [daemon] {msg}\n")

    # --- serving ------------------------------------------------------------------------------
    def bind(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        if not self.address.startswith("\0"):
            try:
                os.unlink(self.address)
            except FileNotFoundError:
                pass
        sock.bind(self.address)
        if not self.address.startswith("\0"):
            os.chmod(self.address, 0o600)
        sock.listen(256)
        sock.settimeout(0.5)
        self._sock = sock
        self.log(20, f"listening on {self.name} (pid {os.getpid()})")

    def serve_forever(self) -> None:
        if self._sock is None:
            self.bind()
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            self._pool.submit(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(600.0)
            pid, uid, _ = struct.unpack("3i", conn.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            if uid != 0 and uid != os.getuid():
                self.log(30, f"refused a request from pid {pid} (uid {uid}): root only")
                return
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
            try:
                plugin, env, stdin = decode_request(b"".join(chunks))
            except ValueError as exc:
                self.log(30, f"bad request from pid {pid}: {exc}")
                return
            if plugin not in PLUGINS or self._stop.is_set():
                conn.sendall(b"FALLBACK\n")
                return
            code, out = run(plugin, env, stdin, self.ctx)
            self.served += 1
            conn.sendall(str(code).encode() + b"\n" + out)
        except OSError as exc:
            self.log(30, f"connection error: {exc}")
        finally:
            conn.close()
            if _netns_inode() != self._netns:
                self.log(50, "a worker thread is stuck in another network namespace: exiting")
                os._exit(70)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)
        if self._sock is not None:
            self._sock.close()
            if not self.address.startswith("\0"):
                try:
                    os.unlink(self.address)
                except FileNotFoundError:
                    pass
        self.ctx.close()
        self.log(20, f"stopped after {self.served} request(s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tortie-cni daemon", description=__doc__.split("\n")[0])
    parser.add_argument("--socket", default=os.environ.get("TORTIE_CNI_SOCKET", DEFAULT_SOCKET),
                        help="abstract socket name (@name or name) or a filesystem path")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--log-file", default=None)
    parser.add_argument("--log-level", default="info", choices=sorted(_LEVELS))
    opts = parser.parse_args(argv)
    daemon = CNIDaemon(opts.socket, workers=opts.workers, log_file=opts.log_file,
                       log_level=opts.log_level)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    try:
        daemon.bind()
    except OSError as exc:
        print(f"tortie-cni daemon: cannot listen on {opts.socket}: {exc}", file=sys.stderr)
        return 1
    try:
        daemon.serve_forever()
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
