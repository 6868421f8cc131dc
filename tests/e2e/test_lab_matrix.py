"""`tortiectl lab matrix`: every pair probed with real packets, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.e2e.conftest import FelixLab, eventually, resource
from tortie.lab import matrix, probe

ROOT = Path(__file__).resolve().parents[2]


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tortie.ctl.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_matrix_command_and_expect(fl: FelixLab, tmp_path: Path) -> None:
    lab = fl.lab
    a = lab.add_workload("node1", "a", labels={"role": "a"})
    b = lab.add_workload("node2", "b", labels={"role": "b"})
    c = lab.add_workload("node1", "c", labels={"role": "c"})
    fl.apply(
        resource(
            "GlobalNetworkPolicy",
            "b-from-a",
            {
                "selector": 'role == "b"',
                "ingress": [
                    {
                        "action": "Allow",
                        "protocol": "TCP",
                        "source": {"selector": 'role == "a"'},
                        "destination": {"ports": [8080]},
                    }
                ],
            },
        )
    )
    with probe.Responder(b.netns, tcp_ports=(8080,)):
        eventually(lambda: probe.tcp(a.netns, b.ip, 8080) is True, 10, "a -> b")
    ids = ["--workload", "a", "--workload", "b", "--workload", "c"]
    out = ctl("lab", "matrix", lab.lab_id, "--check", "tcp:8080", *ids, "-o", "yaml")
    assert out.returncode == 0, out.stderr
    data = yaml.safe_load(out.stdout)
    cells = data["matrix"]["tcp:8080"]
    assert cells["a"]["b"] == "allow"
    assert cells["c"]["b"] == "deny" and cells["b"]["a"] == "deny" and cells["a"]["c"] == "deny"

    saved = tmp_path / "expected.yaml"
    saved.write_text(out.stdout)
    ok = ctl("lab", "matrix", lab.lab_id, "--check", "tcp:8080", *ids, "--expect", str(saved))
    assert ok.returncode == 0, ok.stderr
    assert "✓" in ok.stdout and "✗" in ok.stdout

    cells["c"]["b"] = "allow"
    saved.write_text(yaml.safe_dump(data))
    bad = ctl("lab", "matrix", lab.lab_id, "--check", "tcp:8080", *ids, "--expect", str(saved))
    assert bad.returncode == 1
    assert "tcp:8080 c -> b: expected allow, got deny" in bad.stderr
    for w in ("a", "b", "c"):
        lab.remove_workload(w)
    del c


def test_matrix_render_marks_changes() -> None:
    targets = [matrix.Target("x", "ns-x", "10.0.0.1"), matrix.Target("y", "ns-y", "10.0.0.2")]
    check = matrix.Check("tcp", 80)
    before = matrix.Matrix(targets, [check], {"tcp:80": {"x": {"y": False}, "y": {"x": True}}})
    after = matrix.Matrix(targets, [check], {"tcp:80": {"x": {"y": True}, "y": {"x": True}}})
    changed = matrix.changes(before, after)
    assert changed == [("tcp:80", "x", "y")]
    text = matrix.render(after, changed=changed)
    assert "✓*" in text and text.count("✓") == 2
    assert matrix.differences(after, {"tcp:80": {"x": {"y": "deny"}}}) == [
        "tcp:80 x -> y: expected deny, got allow"
    ]
