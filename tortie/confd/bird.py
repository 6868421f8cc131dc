"""Talking to BIRD 2: checking a configuration file and the control-socket protocol.

- `check_config(path)`: ``bird -p -c PATH`` (parse only); the error text, or None when valid.
- `BirdControl`: BIRD's control socket (what ``birdc -s SOCK`` speaks): one request per
  connection, replies as ``NNNN-text`` / ``NNNN text`` lines (code, then ``-`` for "more
  follows" or a space for the last line of that code) and continuation lines starting with a
  space. A reply ends with a final line of code 0xxx (done), 8xxx (run-time error) or 9xxx
  (parse error). `configure()` is ``birdc configure``; `protocols()` is ``show protocols all``,
  parsed into `BirdProtocol` rows.
- `calico_peers(protocols)`: the BGP rows as calicoctl shows them (peer address and type from
  Calico's protocol names ``Mesh_``/``Global_``/``Node_``, state, since, info).

Unix control sockets live in the filesystem, so these calls work from any network namespace.
"""

from __future__ import annotations

import re
import socket
import subprocess
from dataclasses import dataclass

__all__ = [
    "BirdControl",
    "BirdError",
    "BirdPeerRow",
    "BirdProtocol",
    "calico_peers",
    "check_config",
    "parse_protocols",
]

BIRD = "bird"


class BirdError(Exception):
    """BIRD could not be reached, or refused the request (the message is BIRD's)."""


def check_config(path: str, bird: str = BIRD, timeout: float = 20.0) -> str | None:
    """Validate ``path`` with ``bird -p``; None when it parses, else BIRD's message."""
    try:
        proc = subprocess.run(
            [bird, "-p", "-c", path], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run {bird} -p: {exc}"
    if proc.returncode == 0:
        return None
    return proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}"


@dataclass(frozen=True)
class BirdProtocol:
    """One row of ``show protocols all``, with the details confd and tortiectl use."""

    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str
    description: str = ""
    neighbor: str = ""


_LINE = re.compile(r"^(\d{4})([ -])(.*)$")


class BirdControl:
    """A client of BIRD's control socket at ``path``."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def request(self, command: str) -> list[tuple[int, str]]:
        """Send one command; the reply as (code, text) lines (continuations keep their code)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.path)
            except OSError as exc:
                raise BirdError(f"cannot connect to BIRD at {self.path}: {exc}") from None
            reader = sock.makefile("r", encoding="utf-8", errors="replace", newline="\n")
            self._read_reply(reader)  # greeting: "0001 BIRD 2.0.12 ready."
            sock.sendall(command.encode() + b"\n")
            return self._read_reply(reader)
        except TimeoutError:
            raise BirdError(f"BIRD at {self.path} did not answer {command!r} in time") from None
        finally:
            sock.close()

    @staticmethod
    def _read_reply(reader: object) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        code = 0
        for raw in reader:  # type: ignore[attr-defined]
            line = raw.rstrip("\n")
            m = _LINE.match(line)
            if m is None:
                out.append((code, line[1:] if line.startswith(" ") else line))
                continue
            code, sep, text = int(m.group(1)), m.group(2), m.group(3)
            out.append((code, text))
            if sep == " " and (code < 1000 or code >= 8000):
                return out
        raise BirdError("BIRD closed the control connection mid-reply")

    def configure(self, path: str | None = None) -> str:
        """``configure [\"path\"]``: reload; returns BIRD's message, raises BirdError if refused."""
        cmd = f'configure "{path}"' if path else "configure"
        reply = self.request(cmd)
        final_code, final_text = reply[-1]
        if final_code >= 8000:
            raise BirdError("; ".join(t for _, t in reply if t).strip())
        return final_text

    def protocols(self) -> list[BirdProtocol]:
        return parse_protocols(self.request("show protocols all"))

    def ready(self) -> bool:
        try:
            self.request("show status")
        except BirdError:
            return False
        return True


def parse_protocols(reply: list[tuple[int, str]]) -> list[BirdProtocol]:
    """Rows of a ``show protocols [all]`` reply (code 1002 starts a row, 1006 its details)."""
    rows: list[BirdProtocol] = []
    current: dict[str, str] | None = None

    def flush() -> None:
        if current is not None:
            rows.append(BirdProtocol(**current))

    for code, text in reply:
        if code == 1002:
            flush()
            cols = text.split()
            if len(cols) < 5:
                current = None
                continue
            since = cols[4]
            info_at = 5
            # "since" may be a date and a time ("2024-01-01 12:00:00") in some time formats.
            if len(cols) > 5 and re.match(r"^\d{1,2}:\d{2}", cols[5]):
                since = f"{cols[4]} {cols[5]}"
                info_at = 6
            current = {
                "name": cols[0],
                "proto": cols[1],
                "table": cols[2],
                "state": cols[3],
                "since": since,
                "info": " ".join(cols[info_at:]),
                "description": "",
                "neighbor": "",
            }
        elif code == 1006 and current is not None:
            detail = text.strip()
            if detail.startswith("Description:"):
                current["description"] = detail.split(":", 1)[1].strip()
            elif detail.startswith("Neighbor address:"):
                current["neighbor"] = detail.split(":", 1)[1].strip()
    flush()
    return rows


@dataclass(frozen=True)
class BirdPeerRow:
    """A BGP peer as calicoctl's ``node status`` shows it."""

    address: str
    type: str
    state: str
    since: str
    info: str
    version: int


_PEER_NAME = re.compile(r"^(Global|Node|Mesh)_(.+?)(?:_port_(\d+))?$")
_TYPES = {"Global": "global", "Mesh": "node-to-node mesh", "Node": "node specific"}
_V4 = re.compile(r"^\d+_\d+_\d+_\d+$")


def calico_peers(protocols: list[BirdProtocol]) -> list[BirdPeerRow]:
    """The BGP sessions among ``protocols`` whose names are Calico's, in BIRD's order.

    The peer type is Calico's (from the name prefix), except that a session to a route
    reflector shows as ``route reflector`` and one to a route-reflector client of this node
    as ``rr client`` (confd puts that in the protocol's description).
    """
    out = []
    for p in protocols:
        if p.proto != "BGP":
            continue
        m = _PEER_NAME.match(p.name)
        if m is None:
            continue
        kind, addr = m.group(1), m.group(2)
        version = 4 if _V4.match(addr) else 6
        address = p.neighbor or addr.replace("_", "." if version == 4 else ":")
        peer_type = _TYPES[kind]
        if p.description == "Connection to route reflector":
            peer_type = "route reflector"
        elif p.description == "Connection to route reflector client":
            peer_type = "rr client"
        out.append(BirdPeerRow(address, peer_type, p.state, p.since, p.info, version))
    return out
