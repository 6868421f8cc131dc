"""Felix: the per-host agent (datastore → calculation graph → dataplane).

Sub-packages: ``calc`` (the pure calculation graph), ``rules`` (pure rendering of policy into
chains) and ``dataplane`` (the Linux managers that program iptables, ipsets, routes and
interface sysctls in batches).
"""
