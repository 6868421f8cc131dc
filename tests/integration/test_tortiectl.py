"""tortiectl as a user runs it: a subprocess against a real etcd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tortie.lab.etcd import EtcdServer

pytestmark = pytest.mark.etcd

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def ctl(etcd_server: EtcdServer, etcd_backend: object) -> Run:
    env = dict(os.environ, ETCD_ENDPOINTS=etcd_server.endpoint)
    env.pop("TORTIE_DEBUG", None)

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tortie.ctl.main", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )

    return run


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_round_trip_of_every_example(ctl: Run, path: Path) -> None:
    docs = _docs(path)
    created = ctl("create", "-f", str(path))
    assert created.returncode == 0, created.stderr
    assert "Successfully created" in created.stdout
    again = ctl("create", "-f", str(path))
    assert again.returncode == 1 and "already exists" in again.stderr
    assert ctl("create", "-f", str(path), "--skip-exists").returncode == 0

    for doc in docs:
        kind, meta = doc["kind"], doc["metadata"]
        ns = ["-n", meta["namespace"]] if meta.get("namespace") else []
        got = ctl("get", kind, meta["name"], *ns, "-o", "yaml")
        assert got.returncode == 0, got.stderr
        back = yaml.safe_load(got.stdout)
        assert back["kind"] == kind and back["metadata"]["name"] == meta["name"]
        assert back["metadata"]["uid"] and back["metadata"]["creationTimestamp"]
        for key, value in (doc.get("spec") or {}).items():
            if not isinstance(value, dict | list):
                assert str(back["spec"][key]).lower() == str(value).lower(), key
        table = ctl("get", kind, *ns)
        assert table.returncode == 0, table.stderr
        assert len(table.stdout.splitlines()) >= 2  # headings and at least one row

    applied = ctl("apply", "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    deleted = ctl("delete", "-f", str(path))
    assert deleted.returncode == 0, deleted.stderr
    assert ctl("delete", "-f", str(path)).returncode == 1
    assert ctl("delete", "-f", str(path), "--skip-not-exists").returncode == 0


def test_apply_directory_and_get_every_kind(ctl: Run) -> None:
    out = ctl("apply", "-f", str(EXAMPLES))
    assert out.returncode == 0, out.stderr
    total = sum(len(_docs(p)) for p in EXAMPLE_FILES)
    assert f"Successfully applied {total} resource(s)" in out.stdout
    listing = ctl("get", "workloadendpoints", "-A", "-o", "wide")
    assert listing.returncode == 0 and "NAMESPACE" in listing.stdout


def test_invalid_multi_document_file_writes_nothing(ctl: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: good}\nspec: {order: 1}\n"
        "---\n"
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: bad}\n"
        "spec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n"
        "    destination: {ports: [80, '90:80']}\n"
    )
    out = ctl("apply", "-f", str(bad))
    assert out.returncode == 1
    assert "spec.ingress[0].destination.ports[1]" in out.stderr
    assert "reversed" in out.stderr
    assert "nothing was applied" in out.stderr
    assert "Traceback" not in out.stderr
    assert ctl("get", "tier", "good").returncode == 1  # the valid one was not written either


def test_errors_and_exit_codes(ctl: Run, tmp_path: Path) -> None:
    missing = ctl("apply", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    notyaml = tmp_path / "x.yaml"
    notyaml.write_text("kind: [unclosed\n")
    out = ctl("create", "-f", str(notyaml))
    assert out.returncode == 1 and "not valid YAML" in out.stderr
    out = ctl("get", "frobnicators")
    assert out.returncode == 1 and "not supported" in out.stderr
    out = ctl("get", "gnp", "does-not-exist")
    assert out.returncode == 1 and "does not exist" in out.stderr
    out = ctl("get")
    assert out.returncode == 2
    out = ctl("get", "gnp", "-o", "xml")
    assert out.returncode == 2 and "unknown output format" in out.stderr
    out = ctl("delete", "tier", "default")
    assert out.returncode == 1 and "cannot be deleted" in out.stderr


def test_stdin_patch_label_and_outputs(ctl: Run) -> None:
    pool = (
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\n"
        "spec: {cidr: 10.80.0.0/16}\n"
    )
    assert ctl("create", "-f", "-", stdin=pool).returncode == 0
    got = json.loads(ctl("get", "ippool", "p1", "-o", "json").stdout)
    assert got["spec"]["blockSize"] == 26 and got["spec"]["nodeSelector"] == "all()"
    rv = got["metadata"]["resourceVersion"]

    out = ctl("patch", "ippool", "p1", "-p", '{"spec":{"natOutgoing":true}}')
    assert out.returncode == 0, out.stderr
    out = ctl("patch", "ippool", "p1", "-p", '{"spec":{"blockSize":99}}')
    assert out.returncode == 1 and "blockSize" in out.stderr
    got = json.loads(ctl("get", "ippool", "p1", "-o", "json").stdout)
    assert got["spec"]["natOutgoing"] is True and got["metadata"]["resourceVersion"] != rv

    # a replace with the stale resourceVersion is a conflict
    stale = dict(got)
    stale["metadata"] = dict(got["metadata"], resourceVersion=rv)
    out = ctl("replace", "-f", "-", stdin=json.dumps(stale))
    assert out.returncode == 1 and "conflict" in out.stderr

    assert ctl("label", "ippool", "p1", "zone=a").returncode == 0
    again = ctl("label", "ippool", "p1", "zone=b")
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert ctl("label", "ippool", "p1", "zone=b", "--overwrite").returncode == 0
    got = json.loads(ctl("get", "ippool", "p1", "-o", "json").stdout)
    assert got["metadata"]["labels"] == {"zone": "b"}
    assert ctl("label", "ippool", "p1", "zone", "--remove").returncode == 0

    wide = ctl("get", "ippools", "-o", "wide")
    assert "NAT" in wide.stdout and "10.80.0.0/16" in wide.stdout
    cols = ctl("get", "pools", "-o", "custom-columns=CIDR,NAME")
    assert cols.stdout.split() == ["CIDR", "NAME", "10.80.0.0/16", "p1"]
    exported = yaml.safe_load(ctl("get", "ippool", "p1", "-o", "yaml", "--export").stdout)
    assert "resourceVersion" not in exported["metadata"]
    assert "uid" not in exported["metadata"]


def test_validate_is_offline(tmp_path: Path) -> None:
    env = dict(os.environ, ETCD_ENDPOINTS="http://127.0.0.1:1")
    ok = subprocess.run(
        [sys.executable, "-m", "tortie.ctl.main", "validate", "-f", str(EXAMPLES)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout


def test_unreachable_datastore_is_a_message(tmp_path: Path) -> None:
    env = dict(os.environ, ETCD_ENDPOINTS="http://127.0.0.1:1")
    out = subprocess.run(
        [sys.executable, "-m", "tortie.ctl.main", "get", "nodes"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 1
    assert "127.0.0.1:1" in out.stderr and "Traceback" not in out.stderr
