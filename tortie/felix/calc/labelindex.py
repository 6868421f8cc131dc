"""The label index: which items (endpoints, network sets) match which selectors, incrementally.

Items have their own labels and an ordered list of *parents* (profiles) whose labels they
inherit; an item's own labels win over inherited ones, and an earlier parent wins over a later
one. Selectors and items come and go in any order; the index reports each change of the
match relation exactly once, through ``on_match(sel_id, item_id)`` and
``on_unmatch(sel_id, item_id)``.

Why it is fast: most selectors require some label to be present (``role == "db"``,
``env in {...}``, ``has(tier)``, possibly inside an ``&&``). Each selector is filed under the
most selective such requirement, and items are indexed by their labels, so

- adding a selector evaluates it only against the items that could match it, and
- changing an item's labels re-evaluates only the selectors filed under one of its old or new
  labels (plus the few selectors with no requirement, such as ``all()`` or ``a != "b"``).

Pure and synchronous: no I/O, no threads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping

from tortie.selector import Selector
from tortie.selector.ast import And, Has, LabelEq, LabelIn, Node

SelId = Hashable
ItemId = Hashable
ParentId = Hashable
Callback = Callable[[SelId, ItemId], None]

# A selector's requirement: ("kv", pairs) — one of these (key, value) pairs must be present;
# ("key", key) — the key must be present; ("none", None) — no requirement (scan everything);
# ("never", None) — cannot match anything (e.g. `k in {}`).
Requirement = tuple[str, object]


def requirement(root: Node) -> Requirement:
    """The most selective label requirement every match of ``root`` satisfies."""
    if isinstance(root, LabelEq):
        return ("kv", frozenset({(root.key, root.value)}))
    if isinstance(root, LabelIn):
        if not root.values:
            return ("never", None)
        return ("kv", frozenset((root.key, v) for v in root.values))
    if isinstance(root, Has):
        return ("key", root.key)
    if isinstance(root, And):
        best: Requirement = ("none", None)
        for operand in root.operands:
            req = requirement(operand)
            if _rank(req) < _rank(best):
                best = req
        return best
    return ("none", None)


def _rank(req: Requirement) -> tuple[int, int]:
    kind, data = req
    if kind == "never":
        return (0, 0)
    if kind == "kv":
        assert isinstance(data, frozenset)
        return (1, len(data))
    if kind == "key":
        return (2, 0)
    return (3, 0)


class LabelIndex:
    """Maintains the (selector, item) match relation; see the module docstring."""

    def __init__(self, on_match: Callback, on_unmatch: Callback) -> None:
        self._on_match = on_match
        self._on_unmatch = on_unmatch
        # selectors
        self._selectors: dict[SelId, Selector] = {}
        self._sel_req: dict[SelId, Requirement] = {}
        self._sels_by_kv: dict[tuple[str, str], set[SelId]] = defaultdict(set)
        self._sels_by_key: dict[str, set[SelId]] = defaultdict(set)
        self._sels_unconstrained: set[SelId] = set()
        # items
        self._own_labels: dict[ItemId, Mapping[str, str]] = {}
        self._item_parents: dict[ItemId, tuple[ParentId, ...]] = {}
        self._labels: dict[ItemId, dict[str, str]] = {}  # effective labels
        self._items_by_kv: dict[tuple[str, str], set[ItemId]] = defaultdict(set)
        self._items_by_key: dict[str, set[ItemId]] = defaultdict(set)
        # parents
        self._parent_labels: dict[ParentId, Mapping[str, str]] = {}
        self._children: dict[ParentId, set[ItemId]] = defaultdict(set)
        # the relation
        self._matches_by_sel: dict[SelId, set[ItemId]] = defaultdict(set)
        self._matches_by_item: dict[ItemId, set[SelId]] = defaultdict(set)

    # --- queries --------------------------------------------------------------------------
    def items_matching(self, sel_id: SelId) -> frozenset[ItemId]:
        return frozenset(self._matches_by_sel.get(sel_id, ()))

    def selectors_matching(self, item_id: ItemId) -> frozenset[SelId]:
        return frozenset(self._matches_by_item.get(item_id, ()))

    def labels_of(self, item_id: ItemId) -> Mapping[str, str] | None:
        return self._labels.get(item_id)

    def has_selector(self, sel_id: SelId) -> bool:
        return sel_id in self._selectors

    @property
    def item_count(self) -> int:
        return len(self._labels)

    @property
    def selector_count(self) -> int:
        return len(self._selectors)

    # --- selectors ------------------------------------------------------------------------
    def update_selector(self, sel_id: SelId, selector: Selector) -> None:
        old = self._selectors.get(sel_id)
        if old is not None and old == selector:
            return
        if old is not None:
            self._unfile_selector(sel_id)
        self._selectors[sel_id] = selector
        req = requirement(selector.root)
        self._sel_req[sel_id] = req
        self._file_selector(sel_id, req)
        current = self._matches_by_sel.get(sel_id, set())
        candidates = self._candidate_items(req)
        matches = selector.matches
        labels = self._labels
        new = {item for item in candidates if matches(labels[item])}
        for item in current - new:
            self._unmatch(sel_id, item)
        for item in new - current:
            self._match(sel_id, item)

    def delete_selector(self, sel_id: SelId) -> None:
        if sel_id not in self._selectors:
            return
        for item in list(self._matches_by_sel.get(sel_id, ())):
            self._unmatch(sel_id, item)
        self._matches_by_sel.pop(sel_id, None)
        self._unfile_selector(sel_id)
        del self._selectors[sel_id]
        del self._sel_req[sel_id]

    def _file_selector(self, sel_id: SelId, req: Requirement) -> None:
        kind, data = req
        if kind == "kv":
            for kv in data:  # type: ignore[attr-defined]
                self._sels_by_kv[kv].add(sel_id)
        elif kind == "key":
            self._sels_by_key[data].add(sel_id)  # type: ignore[index]
        elif kind == "none":
            self._sels_unconstrained.add(sel_id)

    def _unfile_selector(self, sel_id: SelId) -> None:
        kind, data = self._sel_req[sel_id]
        if kind == "kv":
            for kv in data:  # type: ignore[attr-defined]
                bucket = self._sels_by_kv.get(kv)
                if bucket is not None:
                    bucket.discard(sel_id)
                    if not bucket:
                        del self._sels_by_kv[kv]
        elif kind == "key":
            bucket = self._sels_by_key.get(data)  # type: ignore[arg-type]
            if bucket is not None:
                bucket.discard(sel_id)
                if not bucket:
                    del self._sels_by_key[data]  # type: ignore[arg-type]
        elif kind == "none":
            self._sels_unconstrained.discard(sel_id)

    def _candidate_items(self, req: Requirement) -> Iterable[ItemId]:
        kind, data = req
        if kind == "kv":
            out: set[ItemId] = set()
            for kv in data:  # type: ignore[attr-defined]
                out |= self._items_by_kv.get(kv, set())
            return out
        if kind == "key":
            return self._items_by_key.get(data, set())  # type: ignore[arg-type]
        if kind == "never":
            return ()
        return self._labels.keys()

    # --- items ------------------------------------------------------------------------------
    def update_item(
        self, item_id: ItemId, labels: Mapping[str, str], parents: Iterable[ParentId] = ()
    ) -> None:
        parents = tuple(parents)
        old_parents = self._item_parents.get(item_id, ())
        if old_parents != parents:
            for p in old_parents:
                kids = self._children.get(p)
                if kids is not None:
                    kids.discard(item_id)
                    if not kids:
                        del self._children[p]
            for p in parents:
                self._children[p].add(item_id)
        self._own_labels[item_id] = dict(labels)
        self._item_parents[item_id] = parents
        self._recompute(item_id)

    def delete_item(self, item_id: ItemId) -> None:
        if item_id not in self._labels:
            return
        for sel in list(self._matches_by_item.get(item_id, ())):
            self._unmatch(sel, item_id)
        self._matches_by_item.pop(item_id, None)
        self._unindex_item(item_id, self._labels.pop(item_id))
        self._own_labels.pop(item_id, None)
        for p in self._item_parents.pop(item_id, ()):
            kids = self._children.get(p)
            if kids is not None:
                kids.discard(item_id)
                if not kids:
                    del self._children[p]

    # --- parents ----------------------------------------------------------------------------
    def update_parent(self, parent_id: ParentId, labels: Mapping[str, str]) -> None:
        if self._parent_labels.get(parent_id) == labels:
            return
        self._parent_labels[parent_id] = dict(labels)
        for item in list(self._children.get(parent_id, ())):
            self._recompute(item)

    def delete_parent(self, parent_id: ParentId) -> None:
        if self._parent_labels.pop(parent_id, None) is None:
            return
        for item in list(self._children.get(parent_id, ())):
            self._recompute(item)

    # --- internals --------------------------------------------------------------------------
    def _effective_labels(self, item_id: ItemId) -> dict[str, str]:
        parents = self._item_parents.get(item_id, ())
        own = self._own_labels[item_id]
        if not parents:
            return dict(own)
        merged: dict[str, str] = {}
        for p in reversed(parents):  # earlier parents win, so apply them last
            merged.update(self._parent_labels.get(p, {}))
        merged.update(own)
        return merged

    def _recompute(self, item_id: ItemId) -> None:
        new_labels = self._effective_labels(item_id)
        old_labels = self._labels.get(item_id)
        if old_labels == new_labels:
            return
        if old_labels is not None:
            self._unindex_item(item_id, old_labels)
        self._labels[item_id] = new_labels
        self._index_item(item_id, new_labels)
        # Selectors that could match the old or the new labels, plus unconstrained ones.
        candidates: set[SelId] = set(self._sels_unconstrained)
        sels_by_kv, sels_by_key = self._sels_by_kv, self._sels_by_key
        for labels in (old_labels or {}, new_labels):
            for kv in labels.items():
                bucket = sels_by_kv.get(kv)
                if bucket:
                    candidates |= bucket
                kbucket = sels_by_key.get(kv[0])
                if kbucket:
                    candidates |= kbucket
        current = self._matches_by_item.get(item_id, set())
        selectors = self._selectors
        for sel in candidates:
            now = selectors[sel].matches(new_labels)
            was = sel in current
            if now and not was:
                self._match(sel, item_id)
            elif was and not now:
                self._unmatch(sel, item_id)

    def _index_item(self, item_id: ItemId, labels: Mapping[str, str]) -> None:
        for kv in labels.items():
            self._items_by_kv[kv].add(item_id)
            self._items_by_key[kv[0]].add(item_id)

    def _unindex_item(self, item_id: ItemId, labels: Mapping[str, str]) -> None:
        for kv in labels.items():
            bucket = self._items_by_kv.get(kv)
            if bucket is not None:
                bucket.discard(item_id)
                if not bucket:
                    del self._items_by_kv[kv]
            kbucket = self._items_by_key.get(kv[0])
            if kbucket is not None:
                kbucket.discard(item_id)
                if not kbucket:
                    del self._items_by_key[kv[0]]

    def _match(self, sel_id: SelId, item_id: ItemId) -> None:
        self._matches_by_sel[sel_id].add(item_id)
        self._matches_by_item[item_id].add(sel_id)
        self._on_match(sel_id, item_id)

    def _unmatch(self, sel_id: SelId, item_id: ItemId) -> None:
        by_sel = self._matches_by_sel.get(sel_id)
        if by_sel is not None:
            by_sel.discard(item_id)
            if not by_sel:
                del self._matches_by_sel[sel_id]
        by_item = self._matches_by_item.get(item_id)
        if by_item is not None:
            by_item.discard(sel_id)
            if not by_item:
                del self._matches_by_item[item_id]
        self._on_unmatch(sel_id, item_id)
