"""Table rendering and column selection for `tortiectl get`."""

import pytest

from tortie.api import lookup, validate
from tortie.ctl.output import OutputError, render, table


def test_table_pads_columns_like_calicoctl() -> None:
    text = table(["NAME", "ORDER"], [["a", "10"], ["longer-name", "5"]])
    assert text.splitlines() == [
        "NAME          ORDER",
        "a             10",
        "longer-name   5",
    ]


def _tier(name: str, order: int) -> object:
    return validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "Tier",
            "metadata": {"name": name},
            "spec": {"order": order},
        }
    )


def test_custom_columns_pick_known_headings() -> None:
    info = lookup("tiers")
    assert info is not None
    text = render(info, [_tier("security", 100)], "custom-columns=ORDER,NAME")
    assert text.splitlines() == ["ORDER   NAME", "100     security"]


def test_unknown_column_is_a_clear_error() -> None:
    info = lookup("tier")
    assert info is not None
    with pytest.raises(OutputError, match=r"unknown column.*BOGUS"):
        render(info, [_tier("a", 1)], "custom-columns=BOGUS")
    with pytest.raises(OutputError, match="unknown output format"):
        render(info, [_tier("a", 1)], "xml")


def test_yaml_list_output() -> None:
    info = lookup("tier")
    assert info is not None
    text = render(info, [_tier("a", 1), _tier("b", 2)], "yaml", revision=7)
    assert "kind: TierList" in text
    assert "resourceVersion: '7'" in text
