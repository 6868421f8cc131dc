"""The lab's state file: everything a later process needs to find, use and tear down a lab.

Each lab has a directory ``<root>/<id>/`` (root: ``$TORTIE_LAB_ROOT`` or ``/run/tortie-lab``)
holding ``state.json`` and the lab's work files (etcd data and log). The state is written
*before* each step that creates something (the plan's namespaces are recorded before they
exist, a workload before its namespace is made), atomically (temp file + rename), so a crash
at any point leaves a record that `down` can work from.

Writers hold an exclusive `flock` on ``<root>/<id>/lock`` and re-read the file under it
(`locked`), so two `tortiectl lab add-workload` runs on one lab do not lose each other's
writes.

Ownership: a lab created from Python records its owner (PID and start time); when that
process is gone the lab is *stale* and `cleanup_stale` tears it down. Labs made with
`tortiectl lab up` have no owner and live until `tortiectl lab down`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from tortie.lab.netns import process_start_time
from tortie.lab.topology import LabPlan
from tortie.lab.workload import Workload

__all__ = [
    "LabState",
    "ProcessRecord",
    "all_states",
    "lab_dir",
    "load",
    "locked",
    "owner_alive",
    "save",
    "state_root",
]

STATE_VERSION = 1


class ProcessRecord(msgspec.Struct):
    """A process started for the lab; `start_time` guards against PID reuse."""

    name: str
    pid: int
    start_time: int | None
    netns: str


class LabState(msgspec.Struct):
    plan: LabPlan
    workdir: str
    created: float = 0.0
    version: int = STATE_VERSION
    owner_pid: int | None = None
    owner_start: int | None = None
    phase: str = "creating"  # creating -> up -> deleting
    processes: list[ProcessRecord] = msgspec.field(default_factory=list)
    workloads: dict[str, Workload] = msgspec.field(default_factory=dict)  # "ns/pod" -> wl
    static_routes: bool = False
    remove_workdir: bool = True  # False when the user chose the work directory

    @property
    def lab_id(self) -> str:
        return self.plan.lab_id

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of the lab, infrastructure and workloads."""
        return self.plan.namespaces + [w.netns for w in self.workloads.values()]


def state_root() -> Path:
    return Path(os.environ.get("TORTIE_LAB_ROOT") or "/run/tortie-lab")


def lab_dir(lab_id: str) -> Path:
    return state_root() / lab_id


def _state_path(lab_id: str) -> Path:
    return lab_dir(lab_id) / "state.json"


def load(lab_id: str) -> LabState | None:
    """The lab's state, or None if there is no such lab."""
    try:
        data = _state_path(lab_id).read_bytes()
    except FileNotFoundError:
        return None
    return msgspec.json.decode(data, type=LabState)


def save(state: LabState) -> None:
    path = _state_path(state.lab_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(state), indent=1))
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(lab_id: str) -> Iterator[LabState | None]:
    """Hold the lab's lock; yield its freshly read state (None if it has none).

    Changes made to the yielded state are saved on a clean exit.
    """
    d = lab_dir(lab_id)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    state: LabState | None = None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        state = load(lab_id)
        yield state
        if state is not None and d.exists():
            save(state)
    finally:
        if state is None and load(lab_id) is None:
            # Nothing was (or is) recorded: do not leave an empty lab directory behind.
            shutil.rmtree(d, ignore_errors=True)
        os.close(fd)


def new_state(plan: LabPlan, workdir: str, owned: bool) -> LabState:
    pid = os.getpid() if owned else None
    return LabState(
        plan=plan,
        workdir=workdir,
        created=time.time(),
        owner_pid=pid,
        owner_start=process_start_time(pid) if pid else None,
    )


def all_states() -> list[LabState]:
    """Every lab with a readable state file, oldest first."""
    root = state_root()
    if not root.is_dir():
        return []
    states = []
    for entry in sorted(root.iterdir()):
        try:
            st = load(entry.name)
        except (msgspec.DecodeError, msgspec.ValidationError, OSError):
            continue
        if st is not None:
            states.append(st)
    return sorted(states, key=lambda s: s.created)


def owner_alive(state: LabState) -> bool:
    """True for labs without an owner, or whose owner process still runs."""
    if state.owner_pid is None:
        return True
    now = process_start_time(state.owner_pid)
    return now is not None and (state.owner_start is None or now == state.owner_start)
