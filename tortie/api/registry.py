"""The table of resource kinds: names, plurals, aliases and table columns for each.

Each kind module registers its Resource subclass with ``@register(...)``. The CLI resolves the
names users type (``gnp``, ``policy``, ``ippool``, ``pools``...) through ``lookup``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tortie.api.base import Resource

Column = tuple[str, Callable[["Resource"], str]]
R = TypeVar("R", bound="type[Resource]")


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str  # lower-case plural as in the datastore key and calicoctl
    namespaced: bool
    cls: type[Resource]
    aliases: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()  # `-o ps` (the default table)
    wide_columns: tuple[Column, ...] = ()  # `-o wide`
    names: frozenset[str] = field(default_factory=frozenset)


KINDS: dict[str, KindInfo] = {}
_BY_NAME: dict[str, KindInfo] = {}


def register(
    plural: str,
    *,
    namespaced: bool = False,
    aliases: tuple[str, ...] = (),
    columns: tuple[Column, ...] = (),
    wide_columns: tuple[Column, ...] = (),
) -> Callable[[R], R]:
    """Class decorator registering a Resource subclass (its ``KIND`` must be set)."""

    def deco(cls: R) -> R:
        kind = cls.KIND
        assert kind, f"{cls.__name__} has no KIND"
        cls.NAMESPACED = namespaced
        names = frozenset({kind.lower(), plural, *(a.lower() for a in aliases)})
        info = KindInfo(
            kind=kind,
            plural=plural,
            namespaced=namespaced,
            cls=cls,
            aliases=aliases,
            columns=columns or (name_column(),),
            wide_columns=wide_columns or columns or (name_column(),),
            names=names,
        )
        KINDS[kind] = info
        for n in names:
            other = _BY_NAME.get(n)
            assert other is None or other.kind == kind, f"alias {n} of {kind} and {other.kind}"
            _BY_NAME[n] = info
        return cls

    return deco


def lookup(name: str) -> KindInfo | None:
    """The kind a user means by ``name`` (kind, plural or alias; case-insensitive)."""
    _ensure_loaded()
    return KINDS.get(name) or _BY_NAME.get(name.lower())


def all_kinds() -> dict[str, KindInfo]:
    _ensure_loaded()
    return KINDS


def _ensure_loaded() -> None:
    import tortie.api.kinds  # noqa: F401  (registers every kind)


# --- column helpers ------------------------------------------------------------------------


def name_column() -> Column:
    return ("NAME", lambda r: r.metadata.name or "")


def namespace_column() -> Column:
    return ("NAMESPACE", lambda r: r.metadata.namespace or "")


def spec_column(header: str, attr_path: str, default: str = "") -> Column:
    """A column showing ``spec.<attr_path>`` (snake_case attributes, dotted)."""
    parts = attr_path.split(".")

    def get(r: Resource) -> str:
        obj: object = r.spec  # type: ignore[attr-defined]
        for p in parts:
            obj = getattr(obj, p, None)
            if obj is None:
                return default
        if isinstance(obj, bool):
            return "true" if obj else "false"
        if isinstance(obj, float) and obj.is_integer():
            return str(int(obj))
        if isinstance(obj, list):
            return ",".join(str(x) for x in obj)
        return str(obj)

    return (header, get)
