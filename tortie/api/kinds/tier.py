"""Tier: an ordered group of policies (``default`` always exists, order 1,000,000).

As Calico (``api/pkg/apis/projectcalico/v3/tier.go`` and ``validateTier``): tier names are
DNS-1123 labels (no dots, at most 63 characters, since they appear in label values), and the
built-in tiers have fixed orders and default actions: ``default`` 1,000,000 and ``Deny``,
``kube-admin`` 1,000 and ``Pass``, ``kube-baseline`` 10,000,000 and ``Pass``. Unset, those
are filled in; set to anything else, they are rejected.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from tortie.api.base import ApiStruct, Ctx, Resource
from tortie.api.registry import name_column, register, spec_column
from tortie.api.validators import DNS1123_LABEL_MAX, check_one_of, is_dns1123_label

DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1_000_000.0
KUBE_ADMIN_TIER = "kube-admin"
KUBE_BASELINE_TIER = "kube-baseline"
TIER_ACTIONS = ("Pass", "Deny")

#: The built-in tiers: name -> (order, defaultAction).
STATIC_TIERS: dict[str, tuple[float, str]] = {
    DEFAULT_TIER: (DEFAULT_TIER_ORDER, "Deny"),
    KUBE_ADMIN_TIER: (1_000.0, "Pass"),
    KUBE_BASELINE_TIER: (10_000_000.0, "Pass"),
}


class TierSpec(ApiStruct):
    order: float | None = None
    default_action: str | None = None

    def check(self, ctx: Ctx, path: str) -> None:
        check_one_of(ctx, f"{path}.defaultAction", self.default_action, TIER_ACTIONS)


@register(
    "tiers",
    aliases=("tier",),
    columns=(name_column(), spec_column("ORDER", "order")),
)
class Tier(Resource):
    KIND: ClassVar[str] = "Tier"
    spec: TierSpec = msgspec.field(default_factory=TierSpec)

    def apply_defaults(self) -> None:
        order, action = STATIC_TIERS.get(self.name, (None, "Deny"))
        if self.spec.default_action is None:
            self.spec.default_action = action
        if self.spec.order is None and order is not None:
            self.spec.order = order

    def check_name(self, ctx: Ctx) -> None:
        name = self.metadata.name
        if not name:
            ctx.error("metadata.name", "name is required")
            return
        if not is_dns1123_label(name):
            ctx.error(
                "metadata.name",
                f"invalid tier name {name!r}: must be lower case alphanumerics or '-' (no '.'), "
                f"starting and ending with an alphanumeric, at most {DNS1123_LABEL_MAX} "
                "characters",
            )
        static = STATIC_TIERS.get(name)
        if static is not None:
            order, action = static
            if self.spec.order != order:
                ctx.error("spec.order", f"the {name!r} tier's order must be {int(order)}")
            if self.spec.default_action != action:
                ctx.error("spec.defaultAction", f"the {name!r} tier's defaultAction must be "
                          f"{action}")
