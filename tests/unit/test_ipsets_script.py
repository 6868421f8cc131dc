"""IpsetManager's restore scripts (delta vs swap), canonical members and save parsing.

A fake runner stands in for the ``ipset`` binary; the kernel-facing behaviour is in
tests/integration/test_dataplane_ipsets.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tortie.felix.dataplane.commands import CommandResult, DataplaneError
from tortie.felix.dataplane.ipsets import (
    IpsetManager,
    canonical_members,
    ipset_name,
    parse_ipset_save,
)

SAVE = """\
create foreign hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1
add foreign 10.1.1.1
create cali40s:a hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x2
add cali40s:a 10.0.0.0/24
add cali40s:a 10.0.1.5
create cali40s:b hash:ip,port family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x3
add cali40s:b 10.0.0.1,tcp:80
create cali4t0 hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x4
"""


class FakeIpset:
    def __init__(self, save_text: str = "", failures: Sequence[str] = ()) -> None:
        self.save_text = save_text
        self.failures = list(failures)  # stderr of successive failing restores
        self.restores: list[str] = []

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        if list(argv) == ["ipset", "save"]:
            return CommandResult(0, self.save_text)
        assert list(argv) == ["ipset", "-exist", "restore"]
        self.restores.append(input or "")
        if self.failures:
            return CommandResult(1, "", self.failures.pop(0))
        return CommandResult(0)


def test_names() -> None:
    assert ipset_name("s:abc") == "cali40s:abc"
    assert ipset_name("s:abc", 6) == "cali60s:abc"
    long = ipset_name("s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug")
    assert long == "cali40s:5y5I3VdRZfDU01O--xXAPx2"
    assert len(long) == 31
    with pytest.raises(ValueError):
        IpsetManager().replace_members("kube-foo", "hash:net", [])
    with pytest.raises(ValueError):
        IpsetManager().replace_members("cali60s:x", "hash:net", [])


def test_canonical_members_match_ipset_save_output() -> None:
    assert canonical_members("hash:net", ["10.0.1.5/32", "10.0.0.7/24", " 10.2.0.0/16 "]) == {
        "10.0.1.5",
        "10.0.0.0/24",
        "10.2.0.0/16",
    }
    assert canonical_members("hash:net", ["0.0.0.0/0"]) == {"0.0.0.0/1", "128.0.0.0/1"}
    assert canonical_members("hash:net", ["::/0"], 6) == {"::/1", "8000::/1"}
    assert canonical_members("hash:net", ["FD00:0::1/128"], 6) == {"fd00::1"}
    assert canonical_members("hash:ip", ["10.0.0.1/32", "10.0.0.2"]) == {"10.0.0.1", "10.0.0.2"}
    assert canonical_members("hash:ip,port", ["10.0.0.1,TCP:0080"]) == {"10.0.0.1,tcp:80"}
    # Wrong family and garbage are dropped, not fatal.
    assert canonical_members("hash:net", ["fd00::/64", "nonsense", "10.0.0.0/8"]) == {"10.0.0.0/8"}


def test_parse_ipset_save_keeps_only_ours() -> None:
    sets = parse_ipset_save(SAVE, "cali4")
    assert set(sets) == {"cali40s:a", "cali40s:b", "cali4t0"}
    assert sets["cali40s:a"].members == {"10.0.0.0/24", "10.0.1.5"}
    assert sets["cali40s:a"].max_size == 1048576
    assert sets["cali40s:b"].set_type == "hash:ip,port"


def test_unchanged_sets_write_nothing_but_leftover_temp_is_destroyed() -> None:
    fake = FakeIpset(SAVE)
    m = IpsetManager(runner=fake)
    m.replace_members("cali40s:a", "hash:net", ["10.0.0.0/24", "10.0.1.5/32"])
    m.replace_members("cali40s:b", "hash:ip,port", ["10.0.0.1,tcp:80"])
    stats = m.apply_updates()
    assert fake.restores == ["destroy cali4t0\n"]
    assert stats.written == 0
    fake.restores.clear()
    assert m.apply_updates().wrote_nothing
    assert fake.restores == []


def test_small_change_is_a_delta() -> None:
    fake = FakeIpset(SAVE)
    m = IpsetManager(runner=fake)
    m.replace_members("cali40s:a", "hash:net", ["10.0.0.0/24", "10.0.1.5"])
    m.replace_members("cali40s:b", "hash:ip,port", ["10.0.0.1,tcp:80"])
    m.apply_updates()
    fake.restores.clear()
    m.add_members("cali40s:a", ["10.9.9.9"])
    m.remove_members("cali40s:a", ["10.0.1.5"])
    m.apply_updates()
    assert fake.restores == ["del cali40s:a 10.0.1.5\nadd cali40s:a 10.9.9.9\n"]


def test_large_rewrite_swaps_through_a_temp_set() -> None:
    many = "".join(f"add cali40s:a 10.1.{i}.0/24\n" for i in range(10))
    fake = FakeIpset(SAVE.replace("create cali4t0", "create cali4tX") + many)
    m = IpsetManager(runner=fake)
    # 12 deletions + 1 addition would cost more than writing the 1 member afresh.
    m.replace_members("cali40s:a", "hash:net", ["192.168.0.0/16"])
    m.apply_updates()
    (script,) = fake.restores
    assert script == (
        "destroy cali4tX\n"
        "create cali4t0 hash:net family inet maxelem 1048576\n"
        "add cali4t0 192.168.0.0/16\n"
        "swap cali4t0 cali40s:a\n"
        "destroy cali4t0\n"
    )


def test_new_set_and_type_change() -> None:
    fake = FakeIpset(SAVE)
    m = IpsetManager(runner=fake)
    m.replace_members("cali40s:a", "hash:ip", ["10.0.0.1"])  # was hash:net: cannot swap
    m.replace_members("cali40s:new", "hash:net", ["10.1.0.0/16", "10.2.0.0/16"])
    m.apply_updates()
    (script,) = fake.restores
    assert script.splitlines()[1:] == [
        "destroy cali40s:a",
        "create cali40s:a hash:ip family inet maxelem 1048576",
        "add cali40s:a 10.0.0.1",
        "create cali40s:new hash:net family inet maxelem 1048576",
        "add cali40s:new 10.1.0.0/16",
        "add cali40s:new 10.2.0.0/16",
    ]


def test_ipv6_family() -> None:
    fake = FakeIpset("")
    m = IpsetManager(6, runner=fake)
    m.replace_members("cali60s:x", "hash:net", ["fd00::/64"])
    m.apply_updates()
    assert fake.restores == [
        "create cali60s:x hash:net family inet6 maxelem 1048576\nadd cali60s:x fd00::/64\n"
    ]


def test_updates_coalesce_and_unknown_set_is_an_error() -> None:
    fake = FakeIpset("")
    m = IpsetManager(runner=fake)
    m.replace_members("cali40s:x", "hash:net", ["10.0.0.1"])
    m.add_members("cali40s:x", ["10.0.0.2"])
    m.remove_members("cali40s:x", ["10.0.0.1"])
    m.apply_updates()
    assert fake.restores == [
        "create cali40s:x hash:net family inet maxelem 1048576\nadd cali40s:x 10.0.0.2\n"
    ]
    with pytest.raises(KeyError):
        m.add_members("cali40s:nope", ["10.0.0.3"])


def test_deletions_wait_for_in_sync_and_skip_sets_in_use() -> None:
    fake = FakeIpset(SAVE)
    m = IpsetManager(runner=fake)
    m.replace_members("cali40s:b", "hash:ip,port", ["10.0.0.1,tcp:80"])
    m.apply_updates()
    fake.restores.clear()
    assert m.apply_deletions(allow_cleanup=False).wrote_nothing
    fake.failures = [
        "ipset v7.17: Error in line 1: Set cannot be destroyed: it is in use by a kernel component"
    ]
    stats = m.apply_deletions(allow_cleanup=True)
    assert fake.restores == ["destroy cali40s:a\n"]
    assert stats.deferred == 1 and stats.deleted == 0
    # Explicit removal of a set works before in-sync, and the in-use one is retried later.
    m.remove_set("cali40s:b")
    fake.restores.clear()
    stats = m.apply_deletions(allow_cleanup=True)
    assert fake.restores == ["destroy cali40s:a\ndestroy cali40s:b\n"]
    assert stats.deleted == 2


def test_failed_update_retries_with_full_rewrite_then_raises() -> None:
    fake = FakeIpset(SAVE, failures=["ipset v7.17: Error in line 1: boom"])
    m = IpsetManager(runner=fake)
    m.replace_members("cali40s:a", "hash:net", ["10.0.0.0/24", "10.0.1.5", "10.3.0.0/16"])
    stats = m.apply_updates()
    assert stats.retries == 1
    assert "swap cali4t0 cali40s:a" in fake.restores[-1]
    fake.failures = ["x: Error in line 1: a", "y: Error in line 2: b"]
    m.add_members("cali40s:a", ["10.4.0.0/16"])
    with pytest.raises(DataplaneError) as info:
        m.apply_updates()
    assert info.value.line is not None
