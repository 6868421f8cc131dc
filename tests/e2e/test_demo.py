"""`make demo`'s main job, run as a new user would: output checked, clean teardown checked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tortie.lab import docker as ld

ROOT = Path(__file__).resolve().parents[2]


def _demo(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tortie.demo", "--no-colour", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    return text


def _check_common(text: str) -> str:
    assert "everything matched" in text and "MISMATCH" not in text
    assert text.count("matches the tutorial") == 7  # 2 simple + 5 advanced steps
    assert re.search(r"\| 172\.31\.0\.12\s+\| node-to-node mesh \| up\s+\|.*Established", text)
    # simple policy, step 1: A reaches C and E (net1), not B (net2) or D (net3)
    assert re.search(r"workload-A\s+·\s+✗\s+✓\s+✗\s+✓", text)
    # advanced policy, last step: frontends reach both databases on 3306, `other` does not
    assert re.search(r"fe-1\s+✓\*\s+✓\*\s+·\s+✗\s+✗", text)
    assert re.search(r"other\s+✗\s+✗\s+✗\s+✗\s+·", text)
    lab_id = re.search(r"lab (\w+) removed: no namespaces, processes or mounts left", text)
    assert lab_id, text
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"tl{lab_id.group(1)}" not in left
    procs = subprocess.run(
        ["pgrep", "-af", f"tl{lab_id.group(1)}|tdm{lab_id.group(1)}"],
        capture_output=True,
        text=True,
    ).stdout
    assert procs.strip() == ""
    return lab_id.group(1)


@pytest.mark.skipif(
    ld.docker_unavailable_reason() is not None, reason=ld.docker_unavailable_reason() or ""
)
def test_demo_with_docker() -> None:
    text = _demo()
    _check_common(text)
    assert "(Docker containers)" in text and "$ tortiectl get workloadendpoints -A" in text
    assert re.search(r"libnetwork\s+libnetwork\s+node3\s+10\.65\.", text)


def test_demo_without_docker() -> None:
    text = _demo("--no-docker")
    _check_common(text)
    assert "(lab workloads)" in text
