"""IpsetManager against the real kernel (ipset 7.17), in a throwaway namespace."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from tortie.felix.dataplane.commands import CommandResult, run_command
from tortie.felix.dataplane.ipsets import IpsetManager
from tortie.felix.dataplane.iptables import Chain, Rule, Table
from tortie.felix.dataplane.netns import run_in_netns

pytestmark = pytest.mark.root



def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def ipset_list(name: str) -> tuple[dict[str, str], set[str]]:
    """Header fields and members of one set, from ``ipset list``."""
    header: dict[str, str] = {}
    members: set[str] = set()
    in_members = False
    for line in sh(f"ipset list {name}").splitlines():
        if in_members:
            if line.strip():
                members.add(line.strip())
        elif line == "Members:":
            in_members = True
        elif ": " in line:
            k, v = line.split(": ", 1)
            header[k] = v
    return header, members


def set_names() -> set[str]:
    return set(sh("ipset list -n").split())


class Recorder:
    def __init__(self) -> None:
        self.scripts: list[str] = []

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        if argv[-1] == "restore":
            self.scripts.append(input or "")
        return run_command(argv, input)


MEMBERS = [f"10.65.{i}.0/26" for i in range(20)]


def test_create_delta_and_swap_paths(ns: str) -> None:
    def body() -> None:
        rec = Recorder()
        m = IpsetManager(runner=rec)
        m.replace_members("cali40s:web", "hash:net", MEMBERS)
        m.replace_members("cali40s:named", "hash:ip,port", ["10.65.0.5,tcp:8080"])
        stats = m.apply_updates()
        assert stats.commands == 1 and stats.written == 2
        header, members = ipset_list("cali40s:web")
        assert header["Type"] == "hash:net" and "maxelem 1048576" in header["Header"]
        assert members == set(MEMBERS)
        assert ipset_list("cali40s:named")[1] == {"10.65.0.5,tcp:8080"}
        initval = header["Header"].split("initval ")[1]

        # Small change: add/del lines on the live set (same kernel object, same initval).
        m.add_members("cali40s:web", ["10.66.0.1/32"])
        m.remove_members("cali40s:web", [MEMBERS[0]])
        m.apply_updates()
        assert rec.scripts[-1] == ("del cali40s:web 10.65.0.0/26\nadd cali40s:web 10.66.0.1\n")
        header, members = ipset_list("cali40s:web")
        assert members == (set(MEMBERS) - {MEMBERS[0]}) | {"10.66.0.1"}
        assert header["Header"].split("initval ")[1] == initval

        # Full rewrite: built in a temp set and swapped in (a different kernel object).
        m.replace_members("cali40s:web", "hash:net", ["192.168.0.0/16", "172.16.0.0/12"])
        m.apply_updates()
        assert "swap cali4t0 cali40s:web" in rec.scripts[-1]
        header, members = ipset_list("cali40s:web")
        assert members == {"192.168.0.0/16", "172.16.0.0/12"}
        assert header["Header"].split("initval ")[1] != initval
        assert "cali4t0" not in set_names()

    run_in_netns(ns, body)


def test_swap_keeps_iptables_references(ns: str) -> None:
    def body() -> None:
        m = IpsetManager()
        m.replace_members("cali40s:web", "hash:net", MEMBERS)
        m.apply_updates()
        t = Table("filter")
        t.update_chain(Chain("cali-x", (Rule("-m set --match-set cali40s:web src", "-j DROP"),)))
        t.apply()
        assert ipset_list("cali40s:web")[0]["References"] == "1"
        m.replace_members("cali40s:web", "hash:net", ["10.0.0.0/8"])
        m.apply_updates()  # swap of a referenced set is allowed
        header, members = ipset_list("cali40s:web")
        assert members == {"10.0.0.0/8"} and header["References"] == "1"

    run_in_netns(ns, body)


def test_graceful_restart_and_stale_cleanup_after_in_sync(ns: str) -> None:
    def body() -> None:
        sh("ipset create foreign hash:ip && ipset add foreign 192.0.2.1")
        m = IpsetManager()
        m.replace_members("cali40s:keep", "hash:net", MEMBERS)
        m.replace_members("cali40s:old", "hash:net", ["10.1.0.0/16"])
        m.apply_updates()
        t = Table("filter")
        t.update_chain(Chain("cali-x", (Rule("-m set --match-set cali40s:old dst", "-j ACCEPT"),)))
        t.apply()

        # Restart: the new manager only knows "keep" (so far).
        rec = Recorder()
        m2 = IpsetManager(runner=rec)
        m2.replace_members("cali40s:keep", "hash:net", list(reversed(MEMBERS)))
        stats = m2.apply_updates()
        assert rec.scripts == [] and stats.reads == 1
        assert m2.apply_deletions(allow_cleanup=False).commands == 0
        assert "cali40s:old" in set_names()

        # In sync, but a rule still uses the stale set: kept for later, nothing else breaks.
        stats = m2.apply_deletions(allow_cleanup=True)
        assert stats.deferred == 1 and "cali40s:old" in set_names()
        # Once the rule is gone (iptables before ipset deletions), the set goes.
        t2 = Table("filter")
        t2.apply(allow_cleanup=True)
        stats = m2.apply_deletions(allow_cleanup=True)
        assert stats.deleted == 1
        assert set_names() == {"foreign", "cali40s:keep"}
        assert ipset_list("foreign")[1] == {"192.0.2.1"}

    run_in_netns(ns, body)


def test_type_change_and_ipv6(ns: str) -> None:
    def body() -> None:
        m = IpsetManager()
        m.replace_members("cali40s:x", "hash:net", ["10.0.0.0/24"])
        m.apply_updates()
        m.replace_members("cali40s:x", "hash:ip", ["10.0.0.1", "10.0.0.2"])
        m.apply_updates()
        header, members = ipset_list("cali40s:x")
        assert header["Type"] == "hash:ip" and members == {"10.0.0.1", "10.0.0.2"}

        v6 = IpsetManager(6)
        v6.replace_members("cali60s:x", "hash:net", ["fd00:1::/64", "fd00:2::5/128", "::/0"])
        v6.apply()
        header, members = ipset_list("cali60s:x")
        assert "family inet6" in header["Header"]
        assert members == {"fd00:1::/64", "fd00:2::5", "::/1", "8000::/1"}
        # The IPv4 manager neither sees nor cleans IPv6 sets, and vice versa.
        m.apply(allow_cleanup=True)
        v6.apply(allow_cleanup=True)
        assert {"cali40s:x", "cali60s:x"} <= set_names()

    run_in_netns(ns, body)


def test_drift_repaired_after_refresh(ns: str) -> None:
    def body() -> None:
        m = IpsetManager()
        m.replace_members("cali40s:x", "hash:net", MEMBERS)
        m.apply_updates()
        sh("ipset del cali40s:x 10.65.3.0/26 && ipset add cali40s:x 203.0.113.0/24")
        assert m.apply_updates().commands == 0
        m.refresh()
        stats = m.apply_updates()
        assert stats.commands == 1 and stats.lines == 2
        assert ipset_list("cali40s:x")[1] == set(MEMBERS)

    run_in_netns(ns, body)
