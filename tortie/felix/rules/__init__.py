"""Felix's rule renderer: policies, profiles and endpoints → iptables chains.

Pure and fast: plain data in (:mod:`tortie.felix.proto` messages, a :class:`RulesConfig`),
:class:`~tortie.felix.dataplane.iptables.Chain` values out; no I/O. One renderer per IP
version. Chain and IP set names, mark bits and chain layout follow Calico's Go Felix
(``felix/rules``), so ``iptables-save`` reads the same.

- :mod:`.config` — :class:`RulesConfig` (mark bits, actions, failsafe ports);
- :mod:`.names` — chain and IP set naming;
- :mod:`.matches` — the text of each match and action;
- :mod:`.policy` — rules, policy and profile chains (incl. the scratch-mark match blocks);
- :mod:`.endpoints` — per-endpoint chains for workloads and host endpoints;
- :mod:`.dispatch` — interface → endpoint-chain dispatch, ``cali-rpf-skip``;
- :mod:`.static` — the fixed top-level chains and the kernel-chain insertions.

The static chains jump to chains whose contents change at runtime; the caller must always
program them, empty or not: every chain of :meth:`RuleRenderer.dispatch_chains`,
``cali-rpf-skip`` (raw), and ``cali-nat-outgoing``, ``cali-fip-dnat``, ``cali-fip-snat`` (nat).
"""

from __future__ import annotations

from collections.abc import Iterable

from tortie.felix.dataplane.iptables import Chain, Rule
from tortie.felix.proto import (
    HostEndpoint,
    Policy,
    PolicyID,
    Profile,
    ProfileID,
    WorkloadEndpoint,
)
from tortie.felix.rules import dispatch, endpoints, policy, static
from tortie.felix.rules.config import ProtoPort, RulesConfig

__all__ = ["ProtoPort", "RuleRenderer", "RulesConfig"]


class RuleRenderer:
    """Renders every Felix chain for one IP version and configuration."""

    def __init__(self, config: RulesConfig) -> None:
        self.config = config

    @property
    def ip_version(self) -> int:
        return self.config.ip_version

    # Policies and profiles (filter table; untracked policies also in raw, pre-DNAT in mangle).

    def policy_chains(self, policy_id: PolicyID, pol: Policy) -> tuple[Chain, Chain]:
        """``cali-pi-<tier>/<name>`` and ``cali-po-…``."""
        return policy.policy_chains(policy_id, pol, self.config)

    def profile_chains(self, profile_id: ProfileID, profile: Profile) -> tuple[Chain, Chain]:
        """``cali-pri-<name>`` and ``cali-pro-<name>``."""
        return policy.profile_chains(profile_id, profile, self.config)

    # Endpoints.

    def workload_chains(self, endpoint: WorkloadEndpoint) -> tuple[Chain, Chain]:
        """``cali-tw-<iface>`` and ``cali-fw-<iface>`` (filter)."""
        return endpoints.workload_endpoint_chains(endpoint, self.config)

    def host_endpoint_chains(self, endpoint: HostEndpoint) -> dict[str, tuple[Chain, ...]]:
        """Per table: filter ``cali-th-``/``cali-fh-``/``cali-thfw-``/``cali-fhfw-``, raw
        (``doNotTrack``) and mangle (``preDNAT`` ingress, DNAT'd egress)."""
        return endpoints.host_endpoint_chains(endpoint, self.config)

    def dispatch_chains(
        self, workload_ifaces: Iterable[str], host_endpoints: Iterable[HostEndpoint]
    ) -> dict[str, tuple[Chain, ...]]:
        """Per table, the interface dispatch chains for these endpoints."""
        return dispatch.dispatch_chains(workload_ifaces, host_endpoints, self.config)

    def rpf_skip_chain(self, workloads: Iterable[WorkloadEndpoint]) -> Chain:
        """``cali-rpf-skip`` (raw) from the workloads' ``allowSpoofedSourcePrefixes``."""
        return dispatch.rpf_skip_chain(workloads, self.config)

    # NAT.

    def nat_outgoing_chain(self, active: bool) -> Chain:
        """``cali-nat-outgoing``; ``active`` when some pool has ``natOutgoing``."""
        return static.nat_outgoing_chain(active, self.config)

    def floating_ip_chains(self, workloads: Iterable[WorkloadEndpoint]) -> tuple[Chain, Chain]:
        """``cali-fip-dnat`` and ``cali-fip-snat`` (nat)."""
        return static.floating_ip_chains(workloads, self.config)

    # Fixed chains and hooks.

    def static_chains(self, table: str) -> tuple[Chain, ...]:
        """The chains of ``table`` that depend only on configuration."""
        return static.static_chains(table, self.config)

    def insertions(self, table: str) -> dict[str, tuple[Rule, ...]]:
        """Kernel chain → rules to insert (for the table manager's ``set_rule_insertions``)."""
        return static.insertions(table)
