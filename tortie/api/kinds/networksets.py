"""NetworkSet (namespaced) and GlobalNetworkSet: labelled sets of IP networks.

Policy rules select them by label like endpoints; their ``nets`` become the members of the
selector's IP set. Fields follow ``api/pkg/apis/projectcalico/v3/networkset.go`` and
``globalnetworkset.go``: ``nets`` takes CIDRs (host bits allowed, as Calico's ``cidr``
validator) or bare IPs, without duplicates (``listType=set``). As Calico's
``validateNetworkSet``, the ``projectcalico.org/namespace`` label is reserved.
(``allowedEgressDomains`` exists only in Calico Enterprise's API, so it is not accepted.)
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from tortie.api import validators as v
from tortie.api.base import ApiStruct, Ctx, Resource
from tortie.api.kinds.policy import prune_empty
from tortie.api.registry import Column, name_column, register

RESERVED_LABEL = "projectcalico.org/namespace"


class NetworkSetSpec(ApiStruct):
    nets: list[str] | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        if v.check_unique(ctx, f"{path}.nets", self.nets):
            for i, net in enumerate(self.nets or []):
                v.check_network(ctx, f"{path}.nets[{i}]", net, masked=False)


class GlobalNetworkSetSpec(NetworkSetSpec):
    pass


def _check_reserved_label(ctx: Ctx, res: Resource) -> None:
    if RESERVED_LABEL in res.labels:
        ctx.error(f"metadata.labels[{RESERVED_LABEL}]",
                  f"{RESERVED_LABEL} is not a valid label name: Calico sets it itself")


def _nets(r: Resource) -> str:
    """The nets joined by commas, cut to 80 characters as calicoctl's ``joinAndTruncate``."""
    text = ",".join(r.spec.nets or [])  # type: ignore[attr-defined]
    return text if len(text) <= 80 else text[:77] + "..."


NETS_COLUMNS: tuple[Column, ...] = (name_column(), ("NETS", _nets))


@register(
    "networksets",
    namespaced=True,
    aliases=("netset", "netsets"),
    columns=(name_column(),),
    wide_columns=NETS_COLUMNS,
)
class NetworkSet(Resource):
    KIND: ClassVar[str] = "NetworkSet"
    spec: NetworkSetSpec = msgspec.field(default_factory=NetworkSetSpec)

    def apply_defaults(self) -> None:
        prune_empty(self.spec)

    def check_name(self, ctx: Ctx) -> None:
        super().check_name(ctx)
        v.check_namespace(ctx, "metadata.namespace", self.metadata.namespace)
        _check_reserved_label(ctx, self)


@register(
    "globalnetworksets",
    columns=(name_column(),),
    wide_columns=NETS_COLUMNS,
)
class GlobalNetworkSet(Resource):
    KIND: ClassVar[str] = "GlobalNetworkSet"
    spec: GlobalNetworkSetSpec = msgspec.field(default_factory=GlobalNetworkSetSpec)

    def apply_defaults(self) -> None:
        prune_empty(self.spec)

    def check_name(self, ctx: Ctx) -> None:
        super().check_name(ctx)
        _check_reserved_label(ctx, self)
