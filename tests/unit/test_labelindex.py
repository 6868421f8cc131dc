"""The label index against a linear-scan oracle, over random sequences of changes."""

import random

from tortie.felix.calc.labelindex import LabelIndex, requirement
from tortie.selector import parse

SELECTORS = [
    'role == "db"',
    'role == "db" && env in {"prod", "staging"} && !has(debug)',
    'env in {"prod", "dev"}',
    "has(debug)",
    'role != "web"',
    "all()",
    'env not in {"prod"}',
    '(role == "web" || env == "dev")',
    'tier starts with "fr"',
    "env in {}",
    'role == "web" && has(tier)',
]
KEYS = ["role", "env", "debug", "tier"]
VALUES = {
    "role": ["db", "web", "cache"],
    "env": ["prod", "dev", "staging"],
    "debug": ["1"],
    "tier": ["front", "back"],
}


def _random_labels(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(VALUES[k]) for k in KEYS if rng.random() < 0.5}


class Oracle:
    def __init__(self) -> None:
        self.selectors: dict = {}
        self.own: dict = {}
        self.parents: dict = {}
        self.parent_labels: dict = {}

    def labels(self, item):  # type: ignore[no-untyped-def]
        merged: dict[str, str] = {}
        for p in reversed(self.parents[item]):
            merged.update(self.parent_labels.get(p, {}))
        merged.update(self.own[item])
        return merged

    def relation(self) -> set:
        return {
            (s, i)
            for s, sel in self.selectors.items()
            for i in self.own
            if sel.evaluate_slow(self.labels(i))
        }


def test_requirements_pick_the_most_selective_label() -> None:
    assert requirement(parse('role == "db" && has(x)').root) == (
        "kv",
        frozenset({("role", "db")}),
    )
    assert requirement(parse("has(x)").root) == ("key", "x")
    assert requirement(parse('a != "b"').root) == ("none", None)
    assert requirement(parse("a in {}").root) == ("never", None)


def test_index_matches_oracle_over_random_changes() -> None:
    rng = random.Random(1234)
    relation: set = set()
    events: list = []

    def on_match(s, i):  # type: ignore[no-untyped-def]
        assert (s, i) not in relation, "match reported twice"
        relation.add((s, i))
        events.append(("+", s, i))

    def on_unmatch(s, i):  # type: ignore[no-untyped-def]
        assert (s, i) in relation, "unmatch without match"
        relation.discard((s, i))

    index = LabelIndex(on_match, on_unmatch)
    oracle = Oracle()
    for _ in range(3000):
        op = rng.random()
        if op < 0.15:
            sid = rng.randrange(8)
            sel = parse(rng.choice(SELECTORS))
            index.update_selector(sid, sel)
            oracle.selectors[sid] = sel
        elif op < 0.2:
            sid = rng.randrange(8)
            index.delete_selector(sid)
            oracle.selectors.pop(sid, None)
        elif op < 0.65:
            item = rng.randrange(30)
            labels = _random_labels(rng)
            parents = tuple(rng.sample(["p1", "p2", "p3"], rng.randrange(3)))
            index.update_item(item, labels, parents)
            oracle.own[item] = labels
            oracle.parents[item] = parents
        elif op < 0.75:
            item = rng.randrange(30)
            index.delete_item(item)
            oracle.own.pop(item, None)
            oracle.parents.pop(item, None)
        elif op < 0.95:
            p = rng.choice(["p1", "p2", "p3"])
            labels = _random_labels(rng)
            index.update_parent(p, labels)
            oracle.parent_labels[p] = labels
        else:
            p = rng.choice(["p1", "p2", "p3"])
            index.delete_parent(p)
            oracle.parent_labels.pop(p, None)
        assert relation == oracle.relation()
    assert events, "the sequence produced matches"
    for s in oracle.selectors:
        assert index.items_matching(s) == {i for (s2, i) in relation if s2 == s}


def test_own_labels_win_over_parents_and_earlier_parents_win() -> None:
    seen: set = set()
    index = LabelIndex(lambda s, i: seen.add((s, i)), lambda s, i: seen.discard((s, i)))
    index.update_parent("a", {"env": "prod", "team": "x"})
    index.update_parent("b", {"env": "dev", "zone": "z"})
    index.update_item("ep", {"team": "y"}, ("a", "b"))
    assert index.labels_of("ep") == {"env": "prod", "team": "y", "zone": "z"}
    index.update_selector("s", parse('env == "prod" && team == "y"'))
    assert seen == {("s", "ep")}
    index.update_parent("a", {})
    assert seen == set()
    assert index.labels_of("ep") == {"env": "dev", "team": "y", "zone": "z"}
