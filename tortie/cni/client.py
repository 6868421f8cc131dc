"""What the `tortie` and `tortie-ipam` executables run: hand the invocation to the node's CNI
daemon, or run it in this process when there is none.

This module is on the critical path of every pod start, so it imports only `os`, `sys` and
`_socket` (the C module: `socket` itself costs ~8 ms more, for its enums and `selectors`).
The interpreter and these take ~12 ms; the full plugin with the datastore and IPAM takes
~150 ms more to import, which is why the daemon exists (see `tortie.cni.daemon`).

The daemon listens on the abstract unix socket `@tortie-cni` (`TORTIE_CNI_SOCKET` names
another). Abstract sockets belong to a network namespace, so a plugin always reaches the
daemon of the node whose namespace it runs in, and never another node's. The wire format:

    request:  b"TORTIE-CNI/1 <plugin>\\0K=V\\0K=V\\0\\0" + the network configuration (stdin)
    response: b"<exit code>\\n" + the plugin's stdout,  or  b"FALLBACK\\n"

The client forwards the variables the plugin reads (`CNI_*`, `ETCD_*`, `CALICO_*`,
`DATASTORE_TYPE`, `TORTIE_*`, `PATH`). No daemon listening: the plugin runs here (same code,
`tortie.cni.plugin.run`). The daemon went away after taking the request: CNI error 11 (try
again later), since the outcome is unknown. `TORTIE_CNI_DAEMON=0` skips the daemon.
"""

from __future__ import annotations

import _socket
import os
import sys
from _collections_abc import Mapping  # what collections.abc re-exports; os has loaded it

__all__ = ["DEFAULT_SOCKET", "decode_request", "encode_request", "main"]

DEFAULT_SOCKET = "tortie-cni"
MAGIC = "TORTIE-CNI/1"
_FORWARD_PREFIXES = ("CNI_", "ETCD_", "CALICO_", "TORTIE_")
_FORWARD_NAMES = ("DATASTORE_TYPE", "PATH")


def socket_address(name: str) -> str:
    """`@name` or a bare name: abstract; anything with a `/`: a filesystem path."""
    name = name[1:] if name.startswith("@") else name
    return name if "/" in name else "\0" + name


def encode_request(plugin: str, env: Mapping[str, str], stdin: bytes) -> bytes:
    fields = [f"{MAGIC} {plugin}"]
    fields += [
        f"{k}={v}"
        for k, v in env.items()
        if k.startswith(_FORWARD_PREFIXES) or k in _FORWARD_NAMES
    ]
    return ("\0".join(fields) + "\0\0").encode("utf-8", "surrogateescape") + stdin


def decode_request(data: bytes) -> tuple[str, dict[str, str], bytes]:
    """(plugin, environment, stdin); ValueError if it is not a request."""
    head, sep, stdin = data.partition(b"\0\0")
    if not sep:
        raise ValueError("incomplete request")
    fields = head.decode("utf-8", "surrogateescape").split("\0")
    magic, _, plugin = fields[0].partition(" ")
    if magic != MAGIC or not plugin:
        raise ValueError("not a tortie CNI request")
    env = {}
    for f in fields[1:]:
        key, _, value = f.partition("=")
        env[key] = value
    return plugin, env, stdin


def _error_json(code: int, msg: str) -> bytes:
    # Hand-written JSON: importing json here would cost more than the whole client.
    text = msg.replace("\\", "\\\\").replace('"', '\\"')
    return f'{{"cniVersion": "1.1.0", "code": {code}, "msg": "{text}"}}'.encode()


def via_daemon(plugin: str, stdin: bytes, env: Mapping[str, str]) -> tuple[int, bytes] | None:
    """Send the invocation to the daemon: (exit code, stdout), or None when there is none."""
    name = env.get("TORTIE_CNI_SOCKET") or DEFAULT_SOCKET
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(socket_address(name))
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        sock.settimeout(600.0)
        try:
            sock.sendall(encode_request(plugin, env, stdin))
            sock.shutdown(_socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError as exc:
            return 1, _error_json(11, f"lost the tortie CNI daemon mid-request ({exc}): retry")
    finally:
        sock.close()
    data = b"".join(chunks)
    status, sep, out = data.partition(b"\n")
    if status == b"FALLBACK":
        return None
    if not sep or not status.isdigit():
        return 1, _error_json(11, "the tortie CNI daemon closed the connection: retry")
    return int(status), out


def main(plugin: str = "tortie") -> int:
    stdin = sys.stdin.buffer.read()
    env = os.environ
    answer = None
    if env.get("TORTIE_CNI_DAEMON") != "0":
        answer = via_daemon(plugin, stdin, env)
    if answer is None:
        from tortie.cni.plugin import run

        answer = run(plugin, env, stdin)
    code, out = answer
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    return code
