"""iptables Table against the real kernel (iptables-nft 1.8.9), in a throwaway namespace.

Every test runs its body in a thread that has joined a fresh namespace ``tdp-<hex>``
(``run_in_netns``), so ``iptables-restore``/``iptables-save`` and the shell commands used to
inspect or disturb the table all act there; the namespace is deleted afterwards.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from tortie.felix.dataplane.commands import CommandResult, DataplaneError, run_command
from tortie.felix.dataplane.iptables import Chain, Rule, Table
from tortie.felix.dataplane.netns import run_in_netns

pytestmark = pytest.mark.root



def sh(cmd: str) -> str:
    """Run a shell command in the current thread's namespace; return stdout."""
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def save(table: str = "filter", cmd: str = "iptables-save") -> list[str]:
    """The table's rule and chain lines (no comments, no COMMIT)."""
    return [line for line in sh(f"{cmd} -t {table}").splitlines() if line.startswith(("-A", ":"))]


class CountingRunner:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        self.calls.append(list(argv))
        return run_command(argv, input)

    def restores(self) -> int:
        return sum(1 for c in self.calls if c[0].endswith("-restore"))


def policy_chains() -> list[Chain]:
    return [
        Chain(
            "cali-INPUT",
            (
                Rule("-m conntrack --ctstate RELATED,ESTABLISHED", "-j ACCEPT"),
                Rule("-m conntrack --ctstate INVALID", "-j DROP"),
                Rule("-i cali+", "-g cali-wl-to-host"),
            ),
        ),
        Chain(
            "cali-wl-to-host",
            (
                Rule("-p udp --dport 67", "-j ACCEPT", comment="DHCP"),
                Rule(action="-j cali-from-wl-dispatch"),
            ),
        ),
        Chain(
            "cali-from-wl-dispatch",
            (
                Rule("-i cali1234567890a", "-g cali-fw-cali1234567890a"),
                Rule(action="-j DROP", comment="Unknown interface"),
            ),
        ),
        Chain(
            "cali-fw-cali1234567890a",
            (
                Rule(action="-j MARK --set-xmark 0x0/0x30000"),
                Rule("-m mark --mark 0x10000/0x10000", "-j RETURN"),
                Rule("-s 10.65.0.0/26 -p tcp -m multiport --dports 80,443", "-j ACCEPT"),
                Rule(action="-j DROP", comment="Drop if no policies passed packet"),
            ),
        ),
    ]


def make_filter(runner: object = run_command) -> Table:
    t = Table("filter", runner=runner)  # type: ignore[arg-type]
    t.update_chains(policy_chains())
    t.set_rule_insertions("INPUT", [Rule(action="-j cali-INPUT")])
    return t


def test_chains_created_with_hashes(ns: str) -> None:
    def body() -> None:
        t = make_filter()
        stats = t.apply()
        assert stats.commands == 1 and stats.written == 4
        lines = save()
        for chain in policy_chains():
            assert f":{chain.name} - [0:0]" in lines
            got = [line for line in lines if line.startswith(f"-A {chain.name} ")]
            assert len(got) == len(chain.rules)
            for line, h in zip(got, chain.rule_hashes(), strict=True):
                assert f'--comment "cali:{h}"' in line
        # nf_tables quirks: the implicit udp match is printed explicitly, and a comment
        # without spaces or punctuation is printed unquoted.
        dhcp_hash = t.desired_chains["cali-wl-to-host"].rule_hashes()[0]
        assert (
            f'-A cali-wl-to-host -p udp -m udp --dport 67 -m comment --comment "cali:{dhcp_hash}" '
            "-m comment --comment DHCP -j ACCEPT"
        ) in lines
        input_rules = [line for line in lines if line.startswith("-A INPUT ")]
        assert input_rules[0].endswith("-j cali-INPUT")
        # The kernel agrees with our belief, hash for hash.
        kernel = t.kernel_chains()
        t.refresh()
        assert t.kernel_chains() == kernel

    run_in_netns(ns, body)


def test_graceful_restart_writes_nothing(ns: str) -> None:
    def body() -> None:
        make_filter().apply()
        before = sh("iptables-save -t filter | grep -v '^#'")
        runner = CountingRunner()
        stats = make_filter(runner).apply()
        assert runner.restores() == 0
        assert stats.lines == 0 and stats.commands == 0 and stats.reads == 1
        # Also after in-sync: nothing stale, nothing to clean.
        assert make_filter(runner).apply(allow_cleanup=True).lines == 0
        assert runner.restores() == 0
        assert sh("iptables-save -t filter | grep -v '^#'") == before

    run_in_netns(ns, body)


def test_drift_is_repaired_after_refresh(ns: str) -> None:
    def body() -> None:
        t = make_filter()
        t.apply()
        want = save()
        sh("iptables -D cali-fw-cali1234567890a 3")
        sh("iptables -A cali-wl-to-host -j ACCEPT")  # a stray rule in one of our chains
        sh("iptables -D INPUT 1")  # our hook
        assert save() != want
        stats = t.apply()
        assert stats.commands == 0  # no refresh yet: nothing known to be wrong
        t.refresh()
        stats = t.apply()
        assert stats.commands == 1 and stats.written == 2
        assert save() == want

    run_in_netns(ns, body)


def test_foreign_rules_and_chains_untouched(ns: str) -> None:
    def body() -> None:
        sh("iptables -N FOREIGN && iptables -A FOREIGN -s 192.0.2.0/24 -j RETURN")
        sh("iptables -A INPUT -p tcp --dport 22 -j ACCEPT")
        sh("iptables -A INPUT -j FOREIGN")
        sh("iptables -t nat -N KUBE-FOO && iptables -t nat -A PREROUTING -j KUBE-FOO")
        foreign = [line for line in save() if "cali" not in line]
        t = make_filter()
        t.apply()
        t.set_rule_insertions("FORWARD", [Rule(action="-j cali-FORWARD")])
        t.update_chain(Chain("cali-FORWARD", (Rule(action="-j ACCEPT"),)))
        t.remove_chain("cali-wl-to-host")
        t.update_chain(Chain("cali-INPUT", (Rule(action="-j ACCEPT"),)))
        t.apply(allow_cleanup=True)
        t2 = Table("filter")  # a restarted Felix that wants nothing any more
        t2.apply(allow_cleanup=True)
        after = save()
        assert [line for line in after if "cali" not in line] == foreign
        assert not any("cali" in line for line in after)
        assert "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT" in after
        assert save("nat")[-1] == "-A PREROUTING -j KUBE-FOO"

    run_in_netns(ns, body)


def test_insert_mode_goes_first_append_mode_last(ns: str) -> None:
    def body() -> None:
        sh("iptables -A INPUT -p tcp --dport 22 -j ACCEPT")
        t = Table("filter")
        t.update_chain(Chain("cali-INPUT", ()))
        hooks = [Rule(action="-j cali-INPUT"), Rule("-p icmp", "-j ACCEPT")]
        t.set_rule_insertions("INPUT", hooks)
        t.apply()
        rules = [line for line in save() if line.startswith("-A INPUT")]
        assert rules[0].endswith("-j cali-INPUT") and rules[1].endswith("-j ACCEPT")
        assert "--dport 22" in rules[2]
        # Someone inserts above us: we move back to the top.
        sh("iptables -I INPUT 1 -s 198.51.100.1 -j DROP")
        t.refresh()
        t.apply()
        rules = [line for line in save() if line.startswith("-A INPUT")]
        assert rules[0].endswith("-j cali-INPUT") and "198.51.100.1" in rules[2]
        # A restarted Felix in append mode puts its hooks at the end.
        a = Table("filter", insert_mode="append")
        a.update_chain(Chain("cali-INPUT", ()))
        a.set_rule_insertions("INPUT", hooks)
        a.apply()
        rules = [line for line in save() if line.startswith("-A INPUT")]
        assert rules[-2].endswith("-j cali-INPUT") and len(rules) == 4

    run_in_netns(ns, body)


def test_chain_removal_ordering(ns: str) -> None:
    def body() -> None:
        t = make_filter()
        t.apply()
        # Remove the dispatch chain and the endpoint chain it jumps to while the chain that
        # jumps to the dispatch chain is rewritten: one transaction, referrers first.
        t.remove_chains(["cali-from-wl-dispatch", "cali-fw-cali1234567890a"])
        t.update_chain(Chain("cali-wl-to-host", (Rule(action="-j DROP"),)))
        stats = t.apply()
        assert stats.commands == 1 and stats.deleted == 2
        names = {line[1:].split()[0] for line in save() if line.startswith(":")}
        assert "cali-from-wl-dispatch" not in names and "cali-fw-cali1234567890a" not in names
        # A removed chain that is still referenced stays until its referrer lets go.
        t.remove_chain("cali-wl-to-host")
        stats = t.apply()
        assert stats.deferred == 1 and ":cali-wl-to-host - [0:0]" in save()
        t.update_chain(Chain("cali-INPUT", ()))
        stats = t.apply()
        assert stats.deleted == 1 and ":cali-wl-to-host - [0:0]" not in save()
        # Cleanup of everything, hooks included, in one restore.
        runner = CountingRunner()
        empty = Table("filter", runner=runner)
        empty.apply(allow_cleanup=True)
        assert runner.restores() == 1
        assert not any("cali" in line for line in save())

    run_in_netns(ns, body)


def test_nat_raw_mangle_and_ipv6(ns: str) -> None:
    def body() -> None:
        for name, hooks in (
            ("raw", ["PREROUTING", "OUTPUT"]),
            ("mangle", ["PREROUTING", "POSTROUTING"]),
            ("nat", ["PREROUTING", "OUTPUT", "POSTROUTING"]),
        ):
            t = Table(name)
            for hook in hooks:
                t.update_chain(Chain(f"cali-{hook}", (Rule(action="-j RETURN"),)))
                t.set_rule_insertions(hook, [Rule(action=f"-j cali-{hook}")])
            if name == "nat":
                t.update_chain(
                    Chain(
                        "cali-nat-outgoing",
                        (
                            Rule(
                                "-m set --match-set cali40masq-ipam-pools src "
                                "-m set ! --match-set cali40all-ipam-pools dst",
                                "-j MASQUERADE --random-fully",
                            ),
                        ),
                    )
                )
            sh("ipset create cali40masq-ipam-pools hash:net -exist")
            sh("ipset create cali40all-ipam-pools hash:net -exist")
            assert t.apply().commands == 1
            lines = save(name)
            for hook in hooks:
                assert any(
                    line.startswith(f"-A {hook} ") and line.endswith(f"-j cali-{hook}")
                    for line in lines
                )
            # A restarted Felix that has not seen its intent yet leaves all of it alone.
            assert Table(name).apply(allow_cleanup=False).commands == 0
        v6 = Table("filter", ip_version=6)
        v6.update_chain(Chain("cali-INPUT", (Rule("-p ipv6-icmp", "-j ACCEPT"),)))
        v6.set_rule_insertions("INPUT", [Rule(action="-j cali-INPUT")])
        v6.apply()
        assert any("cali-INPUT" in line for line in save("filter", "ip6tables-save"))
        assert not any("cali" in line for line in save("filter"))

    run_in_netns(ns, body)


def test_restore_error_raises_and_leaves_kernel_untouched(ns: str) -> None:
    def body() -> None:
        t = make_filter()
        t.apply()
        before = save()
        t.update_chain(Chain("cali-INPUT", (Rule(action="-j ACCEPT"),)))
        t.update_chain(Chain("cali-bad", (Rule("-m no-such-match-module", "-j ACCEPT"),)))
        runner_calls = CountingRunner()
        t._runner = runner_calls  # observe the retry
        with pytest.raises(DataplaneError) as info:
            t.apply()
        assert "no-such-match-module" in (info.value.line or "")
        assert info.value.stderr
        assert runner_calls.restores() == 2  # first attempt and one full-rewrite retry
        assert save() == before  # the transaction is atomic: nothing half-applied
        # Fix the intent and the table recovers on the next apply.
        t.remove_chain("cali-bad")
        t.apply()
        assert any(line.startswith("-A cali-INPUT") and "ACCEPT" in line for line in save())

    run_in_netns(ns, body)
