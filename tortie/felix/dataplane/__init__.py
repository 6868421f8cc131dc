"""Felix's Linux dataplane managers.

Each manager records *intent* (the desired state) and what is dirty, and ``apply()`` makes the
kernel match with the fewest commands:

- :mod:`.iptables` — one ``iptables-restore --noflush`` per table per apply; owns ``cali-``
  chains and the hash-commented insertions into the kernel chains.
- :mod:`.ipsets` — one ``ipset restore`` per apply for updates and one for deletions; owns
  ``cali4*``/``cali6*`` sets.
- :mod:`.routes` — routes over a long-lived pyroute2 netlink socket.
- :mod:`.interfaces` — workload-interface and global sysctls, written once per appearance.
- :mod:`.driver` — the order of the phases inside one apply, with timings.
- :mod:`.netns` — run code inside a named network namespace (tests, benchmarks).

The code is namespace-agnostic: Felix runs inside the namespace it programs.
"""
