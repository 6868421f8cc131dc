"""Running the dataplane's external commands, and the error they raise.

Every manager that shells out (``iptables-restore``, ``iptables-save``, ``ipset``) does so
through a :class:`CommandRunner`, a plain callable, so that unit tests can replace the kernel
with a recording fake and so that the number of commands run per apply can be counted.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


class DataplaneError(Exception):
    """A dataplane command failed even after a resync and one retry.

    ``command`` is the argv that failed, ``stderr`` what it said, and ``line`` the input line
    it complained about (when it named one).  The manager stays consistent: its next apply
    re-reads the kernel state and tries again.
    """

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] = (),
        stderr: str = "",
        line: str | None = None,
    ) -> None:
        super().__init__(message)
        self.command = tuple(command)
        self.stderr = stderr
        self.line = line

    def __str__(self) -> str:
        parts = [self.args[0] if self.args else "dataplane command failed"]
        if self.stderr:
            parts.append(f"stderr: {self.stderr.strip()}")
        if self.line:
            parts.append(f"offending input line: {self.line}")
        return "; ".join(parts)


@dataclass(frozen=True)
class CommandResult:
    """What a command returned: exit status and captured output."""

    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandRunner(Protocol):
    """Runs *argv* with *input* on stdin and returns its result (never raises on exit status)."""

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult: ...


def run_command(argv: Sequence[str], input: str | None = None) -> CommandResult:
    """The real runner: ``subprocess.run`` with captured text output."""
    start = time.monotonic()
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        return CommandResult(127, "", f"{argv[0]}: {e}")
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "ran %s (%d input bytes) rc=%d in %.3fs",
            " ".join(argv),
            len(input or ""),
            proc.returncode,
            time.monotonic() - start,
        )
    return CommandResult(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class ApplyStats:
    """What one manager's apply did, for logs, tests and metrics.

    ``reads`` counts state dumps (``iptables-save``, ``ipset save``, netlink dumps),
    ``commands`` the write commands run (``iptables-restore``, ``ipset restore``, netlink
    requests), ``lines`` the lines of restore input written, ``written``/``deleted`` the
    objects (chains, sets, routes, sysctls) written or removed, ``deferred`` the removals put
    off (still referenced, or interface missing), ``retries`` the resync-and-retry rounds.
    """

    component: str
    reads: int = 0
    commands: int = 0
    lines: int = 0
    written: int = 0
    deleted: int = 0
    deferred: int = 0
    retries: int = 0
    seconds: float = 0.0

    @property
    def wrote_nothing(self) -> bool:
        return self.commands == 0 and self.lines == 0
