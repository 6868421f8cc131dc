"""Dataplane benchmark: 1,000 chains x 10 rules and 500 ipsets x 20 members.

In throwaway network namespaces (``tdp-bench-<hex>``, deleted afterwards), prints:

- our apply from an empty kernel (ipset updates, then the filter table), split into recording
  intent (hashing every rule) and applying (reads, diff, one ``ipset restore``, one
  ``iptables-restore``);
- the floor: one raw ``ipset restore`` plus one raw ``iptables-restore --noflush`` of exactly
  the text our apply wrote, in a fresh namespace;
- the ratio of the two (project target: <= 1.3x);
- a restarted Felix's no-op apply with the same desired state (target: ~0 writes).

Each figure is the median of several runs, each in a fresh namespace.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tortie.felix.dataplane.commands import CommandResult, run_command
from tortie.felix.dataplane.ipsets import IpsetManager, ipset_name
from tortie.felix.dataplane.iptables import Chain, Rule, Table, chain_name
from tortie.felix.dataplane.netns import netns_unavailable_reason, run_in_netns, temp_netns

CHAINS = 1_000
RULES_PER_CHAIN = 10
IPSETS = 500
MEMBERS_PER_SET = 20
RUNS = 7


def desired_sets() -> dict[str, list[str]]:
    return {
        ipset_name(f"s:bench-selector-{i:04d}"): [
            f"10.{(i * MEMBERS_PER_SET + j) // 256 % 256}.{(i * MEMBERS_PER_SET + j) % 256}.0/28"
            for j in range(MEMBERS_PER_SET)
        ]
        for i in range(IPSETS)
    }


def desired_chains(set_names: Sequence[str]) -> list[Chain]:
    chains = []
    for c in range(CHAINS):
        name = chain_name("cali-pi-", f"default.bench-policy-number-{c:04d}")
        rules = []
        for r in range(RULES_PER_CHAIN):
            s = set_names[(c * RULES_PER_CHAIN + r) % len(set_names)]
            rules.append(
                Rule(
                    f"-p tcp -m set --match-set {s} src -m multiport --dports {1000 + r},8080",
                    "-j MARK --set-xmark 0x10000/0x10000",
                    comment=f"Policy default.bench-{c} ingress rule {r}",
                )
            )
        chains.append(Chain(name, tuple(rules)))
    return chains


class Recorder:
    """Runs commands for real and keeps the text given to each restore."""

    def __init__(self) -> None:
        self.inputs: dict[str, str] = {}

    def __call__(self, argv: Sequence[str], input: str | None = None) -> CommandResult:
        if argv[-1] == "restore" or argv[0].endswith("-restore"):
            self.inputs[argv[0]] = input or ""
        return run_command(argv, input)


def our_apply(
    sets: dict[str, list[str]], chains: list[Chain], recorder: Recorder
) -> tuple[float, float, float]:
    """(record-intent seconds, apply seconds, no-op-after-restart seconds) in this namespace.

    Recording intent is what the managers do with the caller's chains and members (hashing
    every rule, canonicalising every member); building those objects is the caller's cost.
    """
    t0 = time.perf_counter()
    ipsets = IpsetManager(runner=recorder)
    table = Table("filter", runner=recorder)
    for name, members in sets.items():
        ipsets.replace_members(name, "hash:net", members)
    table.update_chains(chains)
    t1 = time.perf_counter()
    ipsets.apply_updates()
    stats = table.apply()
    t2 = time.perf_counter()
    assert stats.commands == 1, stats

    # Restart: fresh managers, same intent, kernel already right.
    ipsets2 = IpsetManager()
    table2 = Table("filter")
    for name, members in sets.items():
        ipsets2.replace_members(name, "hash:net", members)
    table2.update_chains(chains)
    t3 = time.perf_counter()
    s1 = ipsets2.apply_updates()
    s2 = table2.apply()
    t4 = time.perf_counter()
    assert s1.wrote_nothing and s2.wrote_nothing, (s1, s2)
    return t1 - t0, t2 - t1, t4 - t3


def raw_restore(ipset_text: str, iptables_text: str) -> float:
    t0 = time.perf_counter()
    r1 = run_command(["ipset", "-exist", "restore"], ipset_text)
    r2 = run_command(["iptables-restore", "--noflush"], iptables_text)
    elapsed = time.perf_counter() - t0
    assert r1.ok and r2.ok, (r1.stderr, r2.stderr)
    return elapsed


def in_fresh_ns(fn: Callable[..., object], *args: object) -> object:
    with temp_netns("tdp-bench") as ns:
        return run_in_netns(ns, fn, *args)


def main() -> int:
    reason = netns_unavailable_reason()
    if reason:
        print(f"bench_dataplane: skipped ({reason})")
        return 0
    sets = desired_sets()
    chains = desired_chains(list(sets))
    rules = CHAINS * RULES_PER_CHAIN
    members = IPSETS * MEMBERS_PER_SET
    print(
        f"dataplane: {CHAINS} chains x {RULES_PER_CHAIN} rules = {rules} rules, "
        f"{IPSETS} ipsets x {MEMBERS_PER_SET} members = {members} members; "
        f"{RUNS} interleaved runs, each in a fresh namespace"
    )
    records, applies, noops, raws = [], [], [], []
    rec = Recorder()
    for _ in range(RUNS):
        rec = Recorder()
        record_s, apply_s, noop_s = in_fresh_ns(our_apply, sets, chains, rec)  # type: ignore[misc]
        records.append(record_s)
        applies.append(apply_s)
        noops.append(noop_s)
        raw_s = in_fresh_ns(raw_restore, rec.inputs["ipset"], rec.inputs["iptables-restore"])
        raws.append(raw_s)  # type: ignore[arg-type]
    ipt_lines = rec.inputs["iptables-restore"].count("\n")
    ips_lines = rec.inputs["ipset"].count("\n")
    rec_m, app_m = statistics.median(records), statistics.median(applies)
    raw_m, noop_m = statistics.median(raws), statistics.median(noops)
    tot = [r + a for r, a in zip(records, applies, strict=True)]
    print(f"  restore text written: iptables {ipt_lines} lines, ipset {ips_lines} lines")
    print("                                            median    (min)")
    print(f"  raw ipset restore + iptables-restore:     {raw_m:.3f} s  ({min(raws):.3f})")
    print(f"  our apply from empty (read, diff, write): {app_m:.3f} s  ({min(applies):.3f})")
    print(f"  our recording of intent (hash, canon.):   {rec_m:.3f} s  ({min(records):.3f})")
    print(
        f"  ratio apply/raw: {app_m / raw_m:.2f}x (min {min(applies) / min(raws):.2f}x); "
        f"(record+apply)/raw: {statistics.median(tot) / raw_m:.2f}x "
        f"(min {min(tot) / min(raws):.2f}x); target <= 1.3x"
    )
    print(
        f"  no-op apply after restart:                {noop_m:.3f} s  ({min(noops):.3f})"
        "  0 restores, 0 lines written"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
