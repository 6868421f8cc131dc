"""`make demo`'s main job runs as a user would and its output says what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.etcd
ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_and_cleans_up() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tortie.demo", "--no-colour"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "Successfully applied" in text
    assert "default-ipv4-ippool   10.244.0.0/16" in text
    assert "port range 90:80 is reversed" in text
    assert "nothing was applied" in text
    assert "resource does not exist: GlobalNetworkPolicy(broken)" in text
    assert "Successfully deleted" in text
    assert "Demo finished" in text
    assert "\033[" not in text  # --no-colour honoured
