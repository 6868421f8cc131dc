"""Merge patches (RFC 7386) and JSON patches (RFC 6902) used by `tortiectl patch`."""

import pytest

from tortie.ctl.patch import PatchError, json_patch, merge_patch


def test_merge_patch_merges_deletes_and_replaces() -> None:
    target = {"spec": {"order": 1, "selector": "a == 'b'", "ingress": [{"action": "Allow"}]}}
    patched = merge_patch(target, {"spec": {"order": 5, "selector": None, "ingress": []}})
    assert patched == {"spec": {"order": 5, "ingress": []}}
    assert target["spec"]["order"] == 1  # the input is not modified


def test_merge_patch_creates_missing_mappings() -> None:
    assert merge_patch({}, {"metadata": {"labels": {"a": "b"}}}) == {
        "metadata": {"labels": {"a": "b"}}
    }


def test_json_patch_operations() -> None:
    doc = {"spec": {"ports": [1, 2], "x": {"y": 1}}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/spec/ports/-", "value": 3},
            {"op": "replace", "path": "/spec/x/y", "value": 2},
            {"op": "copy", "from": "/spec/x", "path": "/spec/z"},
            {"op": "move", "from": "/spec/ports/0", "path": "/spec/first"},
            {"op": "test", "path": "/spec/first", "value": 1},
            {"op": "remove", "path": "/spec/x"},
        ],
    )
    assert out == {"spec": {"ports": [2, 3], "z": {"y": 2}, "first": 1}}
    assert doc == {"spec": {"ports": [1, 2], "x": {"y": 1}}}


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ({"op": "add"}, "list of operations"),
        ([{"op": "remove", "path": "/nope"}], "does not exist"),
        ([{"op": "test", "path": "/a", "value": 2}], "test failed"),
        ([{"op": "frobnicate", "path": "/a"}], "unknown op"),
        ([{"op": "add", "path": "a", "value": 1}], "must start with '/'"),
        ([{"op": "replace", "path": "/a"}], "needs 'value'"),
    ],
)
def test_json_patch_errors(ops: object, message: str) -> None:
    with pytest.raises(PatchError, match=message):
        json_patch({"a": 1}, ops)
