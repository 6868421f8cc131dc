"""Tier: an ordered group of policies (``default`` always exists, order 1,000,000)."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from tortie.api.base import ApiStruct, Ctx, Resource
from tortie.api.registry import name_column, register, spec_column
from tortie.api.validators import check_one_of

DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1_000_000.0
TIER_ACTIONS = ("Pass", "Deny")


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
        if self.spec.default_action is None:
            self.spec.default_action = "Deny"
        if self.name == DEFAULT_TIER and self.spec.order is None:
            self.spec.order = DEFAULT_TIER_ORDER
