"""How tortiectl prints resources: tables (``ps``, ``wide``, ``custom-columns``), YAML, JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tortie.api import KindInfo, Resource
    from tortie.api.registry import Column

FORMATS = ("ps", "wide", "yaml", "json", "custom-columns=<COL,...>")


class OutputError(ValueError):
    pass


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell plus three spaces, as calicoctl's tabwriter."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i] + 3) for i, cell in enumerate(row[:-1])]
        lines.append(("".join(cells) + row[-1]).rstrip())
    return "\n".join(lines) + "\n"


def columns_for(info: KindInfo, fmt: str, all_namespaces: bool) -> tuple[Column, ...]:
    from tortie.api.registry import namespace_column

    if fmt == "ps":
        cols = info.columns
    elif fmt == "wide":
        cols = info.wide_columns
    elif fmt.startswith("custom-columns="):
        wanted = [c.strip() for c in fmt.split("=", 1)[1].split(",") if c.strip()]
        known = {h.upper(): (h, f) for h, f in (*info.wide_columns, *info.columns)}
        if info.namespaced:
            known["NAMESPACE"] = namespace_column()
        missing = [w for w in wanted if w.upper() not in known]
        if not wanted or missing:
            raise OutputError(
                f"unknown column(s) {', '.join(missing) or '(none given)'} for {info.kind}; "
                f"available: {', '.join(known)}"
            )
        return tuple(known[w.upper()] for w in wanted)
    else:
        raise OutputError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if info.namespaced and all_namespaces and not any(h == "NAMESPACE" for h, _ in cols):
        cols = (namespace_column(), *cols)
    return cols


def render(
    info: KindInfo,
    resources: Sequence[Resource],
    fmt: str,
    *,
    all_namespaces: bool = False,
    as_list: bool = True,
    revision: int | None = None,
) -> str:
    from tortie.api import API_VERSION, to_json, to_yaml

    if fmt in ("yaml", "json"):
        items = [r.to_dict() for r in resources]
        data: Any
        if as_list:
            data = {
                "apiVersion": API_VERSION,
                "items": items,
                "kind": f"{info.kind}List",
                "metadata": {"resourceVersion": str(revision)} if revision else {},
            }
        else:
            data = items[0]
        return to_json(data) if fmt == "json" else to_yaml(data)
    cols = columns_for(info, fmt, all_namespaces)
    rows = [[get(r) for _, get in cols] for r in resources]
    return table([h for h, _ in cols], rows)
